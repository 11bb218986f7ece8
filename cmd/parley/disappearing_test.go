package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/store/sqlite"
)

// history opens u's local store (as the parley binary would) and returns
// the texts of its conversation with peer, or "<timer>" for timer changes.
func (u *user) history(peer *user) []string {
	u.t.Helper()
	a := u.open()
	defer a.Close()
	h, err := a.History(context.Background(), peer.number, 100)
	if err != nil {
		u.t.Fatal(err)
	}
	var out []string
	for _, e := range h {
		if e.Kind == "timer" {
			out = append(out, "<timer>")
		} else {
			out = append(out, e.Text)
		}
	}
	return out
}

// groupHistory is history for a group.
func (u *user) groupHistory(group string) []string {
	u.t.Helper()
	a := u.open()
	defer a.Close()
	h, err := a.GroupHistory(context.Background(), group, 100)
	if err != nil {
		u.t.Fatal(err)
	}
	var out []string
	for _, e := range h {
		out = append(out, e.Text)
	}
	return out
}

// TestDisappearingMessages: a timer set by one side reaches the other
// inside the encrypted conversation; after it runs out the message is gone
// from both local stores (and the received file from disk), and the relay
// holds neither the undelivered envelope nor the attachment's ciphertext.
func TestDisappearingMessages(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	srv, err := bench.Spawn(parleydBin, dir, 10, code, nil, "--data-dir", data, "--sweep-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	alice, bob := newUser(t, srv.Base, 1), newUser(t, srv.Base, 2)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "before the timer", bob.number)
	bob.receive()

	const timer = 6
	if out := alice.ok("updateContact", bob.number, "-e", "6"); !strings.Contains(out, "6s") {
		t.Fatalf("updateContact printed %q", out)
	}
	var timerSeen bool
	for _, l := range strings.Split(bob.ok("receive", "--json", "--timeout", "0.5"), "\n") {
		var ev struct {
			Type        string `json:"type"`
			ExpireTimer int64  `json:"expire_timer"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Type == "timer" && ev.ExpireTimer == timer {
			timerSeen = true
		}
	}
	if !timerSeen {
		t.Fatal("bob did not see the timer change")
	}

	files := t.TempDir()
	photo := filepath.Join(files, "photo.jpg")
	os.WriteFile(photo, []byte("a picture that should not outlive the timer"), 0o600)
	alice.ok("send", "-m", "read and vanish", "-a", photo, bob.number)
	out := t.TempDir()
	got := bob.ok("receive", "--json", "--timeout", "0.5", "--output", out)
	if !strings.Contains(got, "read and vanish") || !strings.Contains(got, `"expire_timer":6`) {
		t.Fatalf("bob received %s", got)
	}
	saved := filepath.Join(out, "photo.jpg")
	if _, err := os.Stat(saved); err != nil {
		t.Fatal(err)
	}
	if h := strings.Join(bob.history(alice), "|"); h != "before the timer|<timer>|read and vanish" {
		t.Fatalf("bob's history: %s", h)
	}
	// Never delivered: Bob does not connect before the timer runs out.
	alice.ok("send", "-m", "never read", "-a", photo, bob.number)

	relayDB, err := sqlite.Open(context.Background(), filepath.Join(data, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer relayDB.Close()
	deadline := time.Now().Add(timer*time.Second + 10*time.Second)
	for {
		envs, _ := relayDB.DumpTable(context.Background(), "envelopes")
		var objects []string
		filepath.WalkDir(filepath.Join(data, "attachments"), func(p string, de os.DirEntry, err error) error {
			if err == nil && !de.IsDir() {
				objects = append(objects, p)
			}
			return nil
		})
		if len(objects) == 0 && countTo(envs, bob) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the timer the relay still holds %d envelopes for bob and objects %v", countTo(envs, bob), objects)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := bob.ok("receive", "--json", "--timeout", "0.5"); strings.Contains(got, "never read") {
		t.Fatalf("an expired envelope was delivered: %s", got)
	}
	if _, err := os.Stat(saved); !os.IsNotExist(err) {
		t.Fatalf("the received file outlived its message: %v", err)
	}
	if h := strings.Join(bob.history(alice), "|"); h != "before the timer|<timer>" {
		t.Fatalf("bob's history after the timer: %s", h)
	}
	if h := strings.Join(alice.history(bob), "|"); h != "before the timer|<timer>" {
		t.Fatalf("alice's history after the timer: %s", h)
	}
}

// countTo counts the envelopes queued for u's account.
func countTo(envs []map[string]any, u *user) int {
	n := 0
	id := u.accountID()
	for _, e := range envs {
		if e["account_id"] == id {
			n++
		}
	}
	return n
}

// accountID is u's account id, from its local store.
func (u *user) accountID() string {
	u.t.Helper()
	a := u.open()
	defer a.Close()
	return a.ID
}

// open opens u's local account as the parley binary would.
func (u *user) open() *cli.Account {
	u.t.Helper()
	a, err := cli.Open(context.Background(), cli.Options{Dir: u.config, Number: u.number, Server: u.server})
	if err != nil {
		u.t.Fatal(err)
	}
	return a
}
