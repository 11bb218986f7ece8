package bench_test

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/bench"
)

// The generator against a real parleyd: every accepted envelope arrives,
// none twice, and the relay's usage is read. (Figures come from make bench.)
func TestGeneratorSmoke(t *testing.T) {
	dir := t.TempDir()
	parleyd := filepath.Join(dir, "parleyd")
	if out, err := exec.Command("go", "build", "-o", parleyd, "../cmd/parleyd").CombinedOutput(); err != nil {
		t.Fatalf("build parleyd: %v\n%s", err, out)
	}
	srv, err := bench.Spawn(parleyd, dir, 6, "123456", io.Discard, "--data-dir", filepath.Join(dir, "data"),
		"--send-rate", "100000", "--send-burst", "100000")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := bench.NewClient(srv.Base, 4)
	devs, err := c.RegisterAll(ctx, 6, 3, "123456")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []bench.Scenario{{Envelopes: 300, Size: 512, Senders: 4}, {Envelopes: 100, Size: 64, Senders: 2, Rate: 500}, {Envelopes: 100, Size: 64, Senders: 2, HTTP: true}} {
		r, err := c.Run(ctx, devs, sc, srv.PID())
		if err != nil {
			t.Fatal(err)
		}
		if r.Sent != sc.Envelopes || r.Delivered != sc.Envelopes || len(r.Failed) != 0 {
			t.Errorf("%+v: sent %d, delivered %d, failed %v", sc, r.Sent, r.Delivered, r.Failed)
		}
		if r.P50 <= 0 || r.P99 < r.P50 || r.Server.RSS == 0 {
			t.Errorf("implausible figures: %s", r)
		}
	}
	if _, err := c.Register(ctx, 7, "123456"); err == nil {
		t.Error("a number outside the test-numbers file registered with the test code")
	}
}
