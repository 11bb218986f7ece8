package main_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/bench"
)

// TestReceiveForeverSurvivesRestart: `parley receive --timeout -1` (like
// chat and the daemon) reconnects when its relay shuts down, as in a
// rolling restart, and goes on receiving from the relay that replaces it.
func TestReceiveForeverSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	spawn := func() *bench.Server {
		s, err := bench.Spawn(parleydBin, dir, 10, code, nil, "--data-dir", data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
		return s
	}
	// A fixed address in front, as a load balancer gives clients.
	var backend atomic.Pointer[url.URL]
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(backend.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	point := func(s *bench.Server) {
		u, _ := url.Parse(s.Base)
		backend.Store(u)
	}
	first := spawn()
	point(first)

	alice, bob := newUser(t, front.URL, 0), newUser(t, front.URL, 1)
	alice.register()
	bob.register()
	rx := newListener(t, bob)
	alice.ok("send", "-m", "before the restart", bob.number)
	if got := rx.wait(t, map[string]bool{"before the restart": true}, 10*time.Second); got["before the restart"] == nil {
		t.Fatalf("the receiver got nothing before the restart: %v", got)
	}

	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	point(spawn())
	alice.ok("send", "-m", "after the restart", bob.number)
	if got := rx.wait(t, map[string]bool{"after the restart": true}, 20*time.Second); got["after the restart"] == nil {
		t.Fatalf("the receiver did not reconnect; it has %v", got)
	}
}
