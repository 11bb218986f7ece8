package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/api/apitest"
	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/store/postgres/pgtest"
)

var parleyBin, parleydBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-e2e")
	if err != nil {
		panic(err)
	}
	parleyBin, parleydBin = filepath.Join(dir, "parley"), filepath.Join(dir, "parleyd")
	for bin, pkg := range map[string]string{parleyBin: ".", parleydBin: "../parleyd"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			panic(err)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const code = "135790"

// relay starts parleyd on the backend ("sqlite" or "postgres"), with
// extra flags.
func relay(t *testing.T, backend string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"--data-dir", filepath.Join(dir, "data")}, extra...)
	if backend == "postgres" {
		secret := filepath.Join(dir, "root.key")
		if out, err := exec.Command(parleydBin, "init-secret", secret).CombinedOutput(); err != nil {
			t.Fatalf("init-secret: %v\n%s", err, out)
		}
		args = append(args, "--database-url", pgtest.Database(t), "--secret-file", secret)
	}
	s, err := bench.Spawn(parleydBin, dir, 10, code, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	// Every request parley sends, and every answer, is checked against
	// api/openapi.yaml on the way.
	return apitest.ValidatingProxy(t, s.Base)
}

// user is one person with their own config directory.
type user struct {
	t      *testing.T
	number string
	config string
	server string
}

func newUser(t *testing.T, server string, i int) *user {
	return &user{t: t, number: bench.Number(i), config: t.TempDir(), server: server}
}

func (u *user) cmd(args ...string) *exec.Cmd { return u.cmdContext(context.Background(), args...) }

// cmdContext is cmd killed when ctx ends.
func (u *user) cmdContext(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, parleyBin, append([]string{"--config", u.config, "-a", u.number}, args...)...)
	c.Env = append(os.Environ(), "PARLEY_SERVER="+u.server)
	return c
}

// run runs parley and returns stdout, stderr and the exit code.
func (u *user) run(stdin string, args ...string) (string, string, int) {
	u.t.Helper()
	c := u.cmd(args...)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs parley and fails the test unless it exits 0.
func (u *user) ok(args ...string) string {
	u.t.Helper()
	out, errs, code := u.run("", args...)
	if code != 0 {
		u.t.Fatalf("%s: parley %v: exit %d\n%s%s", u.number, args, code, out, errs)
	}
	return out
}

func (u *user) register() {
	u.t.Helper()
	u.ok("register")
	u.ok("verify", code)
}

type event struct {
	Type            string `json:"type"`
	Sender          string `json:"sender"`
	Text            string `json:"text"`
	IdentityChanged bool   `json:"identity_changed"`
	IdentityTrusted bool   `json:"identity_trusted"`
	Receipt         *struct {
		Type string `json:"type"`
	} `json:"receipt"`
}

// receive returns the messages and receipts waiting for u.
func (u *user) receive() []event {
	u.t.Helper()
	out := u.ok("receive", "--json", "--timeout", "0.5")
	var evs []event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			u.t.Fatalf("receive --json printed %q: %v", l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func messages(evs []event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "message" {
			out = append(out, e.Sender+": "+e.Text)
		}
	}
	return out
}

type identity struct {
	Number       string `json:"number"`
	TrustLevel   string `json:"trust_level"`
	SafetyNumber string `json:"safety_number"`
}

func (u *user) identity(of *user) identity {
	u.t.Helper()
	var ids []identity
	if err := json.Unmarshal([]byte(u.ok("listIdentities", "-n", of.number, "--json")), &ids); err != nil || len(ids) != 1 {
		u.t.Fatalf("listIdentities: %v %v", ids, err)
	}
	return ids[0]
}

func TestConversation(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			server := relay(t, backend)
			alice, bob := newUser(t, server, 0), newUser(t, server, 1)
			alice.register()
			bob.register()

			// Offline delivery: Alice writes three times before Bob looks.
			for _, m := range []string{"one", "two", "three"} {
				if ts := alice.ok("send", "-m", m, bob.number); strings.TrimSpace(ts) == "" {
					t.Fatal("send printed no timestamp")
				}
			}
			if got := strings.Join(messages(bob.receive()), "|"); got != alice.number+": one|"+alice.number+": two|"+alice.number+": three" {
				t.Fatalf("bob received %q", got)
			}
			// And back, from standard input.
			if _, errs, code := bob.run("hello alice\n", "send", "--message-from-stdin", alice.number); code != 0 {
				t.Fatalf("bob's send: %d %s", code, errs)
			}
			evs := alice.receive()
			if got := strings.Join(messages(evs), "|"); got != bob.number+": hello alice" {
				t.Fatalf("alice received %q", got)
			}
			receipts := 0
			for _, e := range evs {
				if e.Type == "receipt" && e.Receipt.Type == "delivery" {
					receipts++
				}
			}
			if receipts != 3 {
				t.Errorf("alice got %d delivery receipts, want 3", receipts)
			}
			// Both see the same safety number.
			if a, b := alice.identity(bob), bob.identity(alice); a.SafetyNumber == "" || a.SafetyNumber != b.SafetyNumber || a.TrustLevel != "TRUSTED_UNVERIFIED" {
				t.Fatalf("identities: %+v %+v", a, b)
			}

			// Bob reinstalls: a new config directory, new identity key,
			// new registration id on device 1.
			bob.config = t.TempDir()
			bob.register()
			// Alice's session is stale (410): parley fetches the new bundle,
			// sees the changed key and refuses to send (exit 4).
			out, errs, code := alice.run("", "send", "-m", "are you still you?", bob.number)
			if code != 4 || !strings.Contains(errs, "trust") {
				t.Fatalf("send to a changed identity: exit %d, want 4\n%s%s", code, out, errs)
			}
			id := alice.identity(bob)
			if id.TrustLevel != "UNTRUSTED" {
				t.Fatalf("changed identity: %+v", id)
			}
			// A wrong safety number changes nothing.
			wrong := strings.Repeat("1", 60)
			if _, _, code := alice.run("", "trust", bob.number, "--verified-safety-number", wrong); code != 1 {
				t.Fatalf("trust with a wrong safety number: exit %d, want 1", code)
			}
			if _, _, code := alice.run("", "send", "-m", "still blocked", bob.number); code != 4 {
				t.Fatalf("send after a failed trust: exit %d, want 4", code)
			}
			// Bob reads his safety number to Alice; she verifies it.
			alice.ok("trust", bob.number, "--verified-safety-number", id.SafetyNumber)
			if got := alice.identity(bob).TrustLevel; got != "TRUSTED_VERIFIED" {
				t.Fatalf("after trust: %s", got)
			}
			alice.ok("send", "-m", "welcome back", bob.number)
			if got := strings.Join(messages(bob.receive()), "|"); got != alice.number+": welcome back" {
				t.Fatalf("bob (reinstalled) received %q", got)
			}
			if got := bob.identity(alice).SafetyNumber; got != id.SafetyNumber {
				t.Errorf("bob sees safety number %s, alice verified %s", got, id.SafetyNumber)
			}
		})
	}
}

// TestReceiverSeesIdentityChange: a contact who reinstalls and writes
// first shows up as an identity change on receive, and replying is blocked
// until trusted (here with --trust-all-known-keys).
func TestReceiverSeesIdentityChange(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "hi", bob.number)
	bob.receive()
	alice.receive()

	bob.config = t.TempDir()
	bob.register()
	bob.ok("send", "-m", "new phone, same bob", alice.number)
	evs := alice.receive()
	if len(evs) != 1 || evs[0].Text != "new phone, same bob" || !evs[0].IdentityChanged || evs[0].IdentityTrusted {
		t.Fatalf("alice received %+v", evs)
	}
	if _, _, code := alice.run("", "send", "-m", "who is this?", bob.number); code != 4 {
		t.Fatalf("reply to a changed identity: exit %d, want 4", code)
	}
	alice.ok("trust", bob.number, "--trust-all-known-keys")
	alice.ok("send", "-m", "ok", bob.number)
	if got := strings.Join(messages(bob.receive()), "|"); got != alice.number+": ok" {
		t.Fatalf("bob received %q", got)
	}
}

// TestDaemon: a JSON-RPC client sends through the daemon and gets the
// reply as a notification; bad requests get JSON-RPC errors.
func TestDaemon(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()

	d := alice.cmd("daemon")
	stdin, _ := d.StdinPipe()
	stdout, _ := d.StdoutPipe()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); d.Wait() }()
	lines := make(chan map[string]any, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"unparsable": sc.Text()}
			}
			lines <- m
		}
		close(lines)
	}()
	next := func(what string) map[string]any {
		t.Helper()
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("daemon exited waiting for %s", what)
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s from the daemon", what)
		}
		return nil
	}
	io.WriteString(stdin, `{"jsonrpc":"2.0","method":"send","params":{"recipient":["`+bob.number+`"],"message":"from a bot"},"id":1}`+"\n")
	r := next("send result")
	res, _ := r["result"].(map[string]any)
	if r["id"] != 1.0 || res == nil || res["results"].([]any)[0].(map[string]any)["type"] != "SUCCESS" {
		t.Fatalf("send: %v", r)
	}
	if got := strings.Join(messages(bob.receive()), "|"); got != alice.number+": from a bot" {
		t.Fatalf("bob received %q", got)
	}
	bob.ok("send", "-m", "hello bot", alice.number)
	for {
		n := next("receive notification")
		if n["method"] != "receive" {
			t.Fatalf("unexpected line %v", n)
		}
		params := n["params"].(map[string]any)
		env := params["envelope"].(map[string]any)
		if data, ok := env["dataMessage"].(map[string]any); ok {
			if data["message"] != "hello bot" || env["sourceNumber"] != bob.number || params["account"] != alice.number {
				t.Fatalf("notification %v", n)
			}
			break
		}
	}
	for _, c := range []struct {
		req  string
		code float64
	}{
		{`{"jsonrpc":"2.0","method":"nope","id":2}`, -32601},
		{`{"jsonrpc":"2.0","method":"send","params":{"message":"x"},"id":3}`, -1},
		{`{"jsonrpc":"2.0","method":"send","params":{"recipient":5,"message":"x"},"id":4}`, -32602},
		{`{"jsonrpc":"2.0","method":"send","params":["x"],"id":4}`, -32602},
		{`{"jsonrpc":"2.0","method":"send","params":{"recipient":"+1","message":"x","viewOnce":true},"id":4}`, -1},
		{`{"jsonrpc":"2.0","method":"send","params":{"recipient":"not a number","message":"x"},"id":5}`, -1},
		{`{"id":6}`, -32600},
		{`{"jsonrpc":"2.0","method":`, -32700},
	} {
		io.WriteString(stdin, c.req+"\n")
		r := next("error for " + c.req)
		e, _ := r["error"].(map[string]any)
		if e == nil || e["code"] != c.code {
			t.Errorf("%s: %v, want error %v", c.req, r, c.code)
		}
	}
}

// While parley holds its socket (daemon, chat, receive), its sends go over
// it as request frames, not one HTTP request each: the relay's counter of
// requests served over WebSockets shows them.
func TestSendsGoOverTheSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	server := relay(t, "sqlite", "--metrics-listen", metricsAddr)
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	overSocket := func() float64 {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.SplitSeq(string(body), "\n") {
			if strings.HasPrefix(line, `parley_websocket_requests_total{code="200",route="PUT /v1/messages/{account}"} `) {
				fields := strings.Fields(line)
				v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
				return v
			}
		}
		return 0
	}
	bob.ok("send", "-m", "over HTTP", alice.number) // no socket: HTTP
	if n := overSocket(); n != 0 {
		t.Fatalf("%v sends over a socket before any was open", n)
	}
	d := alice.cmd("daemon")
	stdin, _ := d.StdinPipe()
	stdout, _ := d.StdoutPipe()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); d.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // Bob's message, received: the socket is up
		if strings.Contains(sc.Text(), "over HTTP") {
			break
		}
	}
	io.WriteString(stdin, `{"jsonrpc":"2.0","method":"send","params":{"recipient":["`+bob.number+`"],"message":"over the socket"},"id":1}`+"\n")
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["id"] == 1.0 {
			if m["error"] != nil {
				t.Fatalf("send: %v", m)
			}
			break
		}
	}
	if got := strings.Join(messages(bob.receive()), "|"); got != alice.number+": over the socket" {
		t.Fatalf("bob received %q", got)
	}
	if n := overSocket(); n < 1 {
		t.Errorf("the daemon's send did not go over its socket (%v counted)", n)
	}
}
