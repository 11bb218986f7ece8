package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// openProvisioning opens a provisioning socket and reads its address; on a
// refused handshake it returns the HTTP status and error code instead.
func openProvisioning(t *testing.T, r *proc) (*websocket.Conn, string, int, string) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(r.base, "http") + "/v1/provisioning"
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		if resp == nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		code := regexp.MustCompile(`"code":"([a-z_]+)"`).FindStringSubmatch(string(b))
		if code == nil {
			t.Fatalf("refused without an error code: %d %s", resp.StatusCode, b)
		}
		return nil, "", resp.StatusCode, code[1]
	}
	t.Cleanup(func() { conn.Close() })
	var f struct {
		Type    string `json:"type"`
		Address string `json:"address"`
	}
	if err := conn.ReadJSON(&f); err != nil || f.Type != "address" {
		t.Fatalf("first frame: %+v %v", f, err)
	}
	return conn, f.Address, 0, ""
}

// metric reads one counter or gauge of parleyd's metrics endpoint.
func metric(t *testing.T, r *proc, name string) float64 {
	t.Helper()
	resp, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestProvisioningSocketLimits: the unauthenticated provisioning socket is
// bounded per client address and per node (an attacker held 8,000 of them,
// 504 MiB and the descriptor limit), and waiting sockets do not poll the
// database: they are woken by the delivery.
func TestProvisioningSocketLimits(t *testing.T) {
	r := start(t, nil, "--data-dir", t.TempDir(), "--test-number", "+15555550100=123456")
	var conns []*websocket.Conn
	var addrs []string
	for i := range 5 {
		c, a, st, code := openProvisioning(t, r)
		if c == nil {
			t.Fatalf("socket %d refused: %d %s", i+1, st, code)
		}
		conns, addrs = append(conns, c), append(addrs, a)
	}
	if _, _, st, code := openProvisioning(t, r); st != 429 || code != "too_many_sockets" {
		t.Fatalf("sixth socket from one address: %d %s, want 429 too_many_sockets", st, code)
	}
	// Idle waiting sockets read nothing (the old code polled every 250 ms).
	time.Sleep(1500 * time.Millisecond)
	if n := metric(t, r, "parley_provisioning_mailbox_reads_total"); n != 0 {
		t.Errorf("%v mailbox reads by 5 idle sockets in 1.5 s", n)
	}
	if n := metric(t, r, "parley_provisioning_sockets"); n != 5 {
		t.Errorf("open sockets metric: %v", n)
	}
	// A delivery wakes its socket at once, with one read.
	user, pass := registerFlow(t, r, "+15555550100", "123456")
	body := base64.StdEncoding.EncodeToString([]byte("sealed provisioning message"))
	if st, b := r.do("PUT", "/v1/provisioning/"+addrs[2], user, pass, map[string]any{"body": body}); st != 204 {
		t.Fatalf("deliver: %d %v", st, b)
	}
	conns[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	var f struct {
		Type string `json:"type"`
		Body []byte `json:"body"`
	}
	if err := conns[2].ReadJSON(&f); err != nil || f.Type != "message" || string(f.Body) != "sealed provisioning message" {
		t.Fatalf("delivered frame: %+v %v", f, err)
	}
	if n := metric(t, r, "parley_provisioning_mailbox_reads_total"); n != 1 {
		t.Errorf("%v mailbox reads for one delivery", n)
	}
	// A closed socket frees its slot.
	deadline := time.Now().Add(5 * time.Second)
	for metric(t, r, "parley_provisioning_sockets") != 4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if c, _, st, code := openProvisioning(t, r); c == nil {
		t.Fatalf("socket after one closed: %d %s", st, code)
	}
}

// TestProvisioningNodeCap: past --provisioning-sockets, further sockets get
// 503 provisioning_busy.
func TestProvisioningNodeCap(t *testing.T) {
	r := start(t, nil, "--data-dir", t.TempDir(), "--provisioning-sockets", "2")
	for i := range 2 {
		if c, _, st, code := openProvisioning(t, r); c == nil {
			t.Fatalf("socket %d: %d %s", i+1, st, code)
		}
	}
	if _, _, st, code := openProvisioning(t, r); st != 503 || code != "provisioning_busy" {
		t.Fatalf("third socket past the node's cap: %d %s, want 503 provisioning_busy", st, code)
	}
}
