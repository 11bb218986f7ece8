package main_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/api/apitest"
	"github.com/parleyhq/parley/bench"
)

// TestSetPush: `parley setPush --webpush URL` makes the relay wake the
// device at that endpoint when a message waits for it; after `removePush`
// nothing is pushed.
func TestSetPush(t *testing.T) {
	var pushes atomic.Int32
	svc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(svc.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svc.Certificate().Raw}), 0o644)
	vapid := filepath.Join(dir, "vapid.json")
	if out, err := execOut(parleydBin, "webpush-keys", "--out", vapid); err != nil {
		t.Fatalf("webpush-keys: %v %s", err, out)
	}
	s, err := bench.SpawnEnv(parleydBin, dir, []string{"SSL_CERT_FILE=" + ca}, 10, code, nil, "--data-dir", filepath.Join(dir, "data"),
		"--webpush-vapid-file", vapid, "--webpush-subscriber", "mailto:ops@example.org", "--webpush-allow-private-endpoints",
		"--push-delay", "300ms", "--push-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	server := apitest.ValidatingProxy(t, s.Base)
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	if _, errs, code := bob.run("", "setPush", "--webpush", "http://insecure.example/push"); code != 1 {
		t.Errorf("an http endpoint: exit %d %s", code, errs)
	}
	bob.ok("setPush", "--webpush", svc.URL+"/up/bob")
	alice.ok("send", "-m", "wake up", bob.number)
	deadline := time.Now().Add(10 * time.Second)
	for pushes.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pushes.Load() != 1 {
		t.Fatalf("%d pushes, want 1", pushes.Load())
	}
	bob.receive()
	bob.ok("removePush")
	time.Sleep(1100 * time.Millisecond) // past the interval
	alice.ok("send", "-m", "no wake-up", bob.number)
	time.Sleep(1500 * time.Millisecond)
	if n := pushes.Load(); n != 1 {
		t.Errorf("%d pushes after removePush, want still 1", n)
	}
}
