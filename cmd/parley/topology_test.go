package main_test

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/parleyhq/parley/attachments/s3test"
	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/store/postgres/pgtest"
)

// roundRobin is the load balancer of deploy/docker-compose.yml reduced to
// what the test needs: requests (WebSockets included) alternate between
// the replicas, and a replica that refuses connections is skipped.
type roundRobin struct {
	backends []*url.URL
	next     atomic.Uint64
	served   []atomic.Int64
}

func (rr *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for range len(rr.backends) {
		i := int(rr.next.Add(1)) % len(rr.backends)
		b := rr.backends[i]
		if c, err := net.Dial("tcp", b.Host); err != nil {
			continue
		} else {
			c.Close()
		}
		rr.served[i].Add(1)
		httputil.NewSingleHostReverseProxy(b).ServeHTTP(w, r)
		return
	}
	http.Error(w, "no replica", http.StatusBadGateway)
}

// TestTwoReplicaTopology runs deploy/'s topology as plain processes on
// loopback: two parleyd replicas sharing PostgreSQL, one root secret and an
// S3-compatible store, behind a round-robin balancer. Users on different
// replicas exchange messages and a file; when one replica stops, the other
// carries on.
func TestTwoReplicaTopology(t *testing.T) {
	dsn := pgtest.Database(t)
	s3 := s3test.Start(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "root.key")
	if out, err := exec.Command(parleydBin, "init-secret", secret).CombinedOutput(); err != nil {
		t.Fatalf("init-secret: %v %s", err, out)
	}
	rr := &roundRobin{served: make([]atomic.Int64, 2)}
	var replicas []*bench.Server
	for i := range 2 {
		d := filepath.Join(dir, "node", string(rune('a'+i)))
		os.MkdirAll(d, 0o700)
		srv, err := bench.SpawnEnv(parleydBin, d, s3.Env(), 10, code, nil, "--data-dir", d, "--database-url", dsn, "--secret-file", secret,
			"--attachments", "s3", "--s3-bucket", s3.Bucket, "--s3-endpoint", s3.Endpoint, "--client-ip-header", "X-Forwarded-For")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Stop() })
		replicas = append(replicas, srv)
		u, _ := url.Parse(srv.Base)
		rr.backends = append(rr.backends, u)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &http.Server{Handler: rr}
	go lb.Serve(ln)
	t.Cleanup(func() { lb.Close() })
	base := "http://" + ln.Addr().String()

	alice, bob := newUser(t, base, 6), newUser(t, base, 7)
	alice.register()
	bob.register()
	file := filepath.Join(t.TempDir(), "xray.png")
	data := bytes.Repeat([]byte("not really an x-ray "), 5000)
	os.WriteFile(file, data, 0o600)
	alice.ok("send", "-m", "across replicas", "-a", file, bob.number)
	out := t.TempDir()
	got := bob.ok("receive", "--json", "--timeout", "0.5", "--output", out)
	if !strings.Contains(got, "across replicas") {
		t.Fatalf("bob received %s", got)
	}
	if saved, err := os.ReadFile(filepath.Join(out, "xray.png")); err != nil || !bytes.Equal(saved, data) {
		t.Fatalf("attachment across replicas: %v", err)
	}
	for i := range rr.served {
		if rr.served[i].Load() == 0 {
			t.Fatalf("replica %d served nothing; the balancer did not spread the load", i)
		}
	}
	// One replica goes away: the other serves everything.
	replicas[0].Stop()
	bob.ok("send", "-m", "still here", alice.number)
	if got := alice.ok("receive", "--json", "--timeout", "0.5"); !strings.Contains(got, "still here") {
		t.Fatalf("after a replica stopped, alice received %s", got)
	}
}
