package audit_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/sqlite"
)

// The chain and tampering are tested over both SQL engines in
// store/storetest; this tests purging, which needs a clock.

// newLog returns a fresh SQLite database and an audit log on it that
// purges entries older than an hour.
func newLog(t *testing.T) (*store.DB, *audit.Log) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := audit.New(db, bytes.Repeat([]byte{1}, 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db, l
}

func TestPurgeKeepsTheChainVerifiable(t *testing.T) {
	ctx := context.Background()
	db, l := newLog(t)
	l.SetCoalesceWindow(0) // three identical entries, each written
	clock := time.UnixMilli(1_800_000_000_000)
	l.SetClock(func() time.Time { return clock })
	for range 3 {
		l.Record(ctx, audit.AccountRegistered, "a", 1, nil)
	}
	clock = clock.Add(2 * time.Hour)
	l.Record(ctx, audit.DeviceLinked, "a", 2, nil)
	through, err := l.Purge(ctx)
	if err != nil || through != 3 {
		t.Fatalf("Purge = %d, %v", through, err)
	}
	n, first, last, err := l.Verify(ctx)
	if err != nil || n != 2 || first != 4 || last != 5 {
		t.Fatalf("Verify after purge = %d %d..%d, %v", n, first, last, err)
	}
	// A second purge with nothing old enough changes nothing.
	if through, err := l.Purge(ctx); err != nil || through != 0 {
		t.Fatalf("second Purge = %d, %v", through, err)
	}
	// A verifier with another key is told that the key is wrong.
	other, _ := audit.New(db, bytes.Repeat([]byte{2}, 32), time.Hour, nil)
	if _, _, _, err := other.Verify(ctx); !errors.Is(err, audit.ErrWrongKey) {
		t.Fatalf("verify with another key: %v", err)
	}
}

// TestCheckpointSurvivesPurge: a checkpoint whose entry was later purged by
// retention still verifies when the purge recorded that very entry, and is
// otherwise refused with a clear reason rather than accepted.
func TestCheckpointSurvivesPurge(t *testing.T) {
	ctx := context.Background()
	_, l := newLog(t)
	l.SetCoalesceWindow(0) // identical entries, each written
	clock := time.UnixMilli(1_800_000_000_000)
	l.SetClock(func() time.Time { return clock })
	l.Record(ctx, audit.AccountRegistered, "a", 1, nil)
	first, _ := l.Head(ctx)
	l.Record(ctx, audit.AccountRegistered, "a", 1, nil)
	second, _ := l.Head(ctx)
	clock = clock.Add(2 * time.Hour)
	l.Record(ctx, audit.DeviceLinked, "a", 2, nil)
	if through, err := l.Purge(ctx); err != nil || through != 2 {
		t.Fatalf("Purge = %d, %v", through, err)
	}
	if _, _, _, err := l.VerifyAgainst(ctx, second); err != nil {
		t.Fatalf("checkpoint at the purge's last entry: %v", err)
	}
	if _, _, _, err := l.VerifyAgainst(ctx, first); err == nil || !strings.Contains(err.Error(), "purged") {
		t.Fatalf("checkpoint older than the retained log: %v", err)
	}
}

func TestParseHead(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"0:", true}, {"7:" + mac, true},
		{"", false}, {"7", false}, {"7:", false}, {"0:" + mac, false}, {"-1:" + mac, false}, {"07:" + mac, false},
		{"7:" + mac[2:], false}, {"7:" + strings.ToUpper(mac), false}, {"x:" + mac, false},
	} {
		h, err := audit.ParseHead(tc.in)
		if (err == nil) != tc.ok || (tc.ok && h.String() != tc.in) {
			t.Errorf("ParseHead(%q) = %v, %v", tc.in, h, err)
		}
	}
}

// Identical events within the window are written once, then as one entry
// with their count; different events are not merged; the chain verifies.
func TestCoalescing(t *testing.T) {
	ctx := context.Background()
	_, l := newLog(t)
	clock := time.UnixMilli(1_800_000_000_000)
	l.SetClock(func() time.Time { return clock })
	for range 1000 {
		l.Record(ctx, audit.LockSet, "a", 1, nil)
	}
	l.Record(ctx, audit.LockSet, "b", 1, nil)
	l.Record(ctx, audit.LockFailed, "a", 0, map[string]string{"attempts_left": "9"})
	l.Record(ctx, audit.LockFailed, "a", 0, map[string]string{"attempts_left": "8"})
	if err := l.Flush(ctx, false); err != nil { // window not over: nothing yet
		t.Fatal(err)
	}
	clock = clock.Add(audit.DefaultCoalesceWindow)
	if err := l.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	l.Record(ctx, audit.LockSet, "a", 1, nil) // a new window: written
	var got []audit.Entry
	l.Export(ctx, 0, func(e audit.Entry) error { got = append(got, e); return nil })
	if len(got) != 6 {
		t.Fatalf("%d entries, want 6: %+v", len(got), got)
	}
	// a's count is written when a's next, different, event comes (order kept).
	rep := got[2]
	if rep.Kind != audit.LockSet || rep.Account != "a" || rep.Details["repeated"] != "999" || rep.Details["window_start"] == "" {
		t.Errorf("coalesced entry: %+v", rep)
	}
	if n, _, _, err := l.Verify(ctx); err != nil || n != 6 {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

// Coalescing never reorders what happened to an account: counts pending
// for it are written before a different event of the same account.
func TestCoalescingKeepsOrder(t *testing.T) {
	ctx := context.Background()
	_, l := newLog(t)
	for _, k := range []string{audit.LockSet, audit.LockSet, audit.LockSet, audit.LockRemoved, audit.LockSet} {
		l.Record(ctx, k, "a", 1, nil)
	}
	var got []string
	l.Export(ctx, 0, func(e audit.Entry) error {
		got = append(got, e.Kind+"/"+e.Details["repeated"])
		return nil
	})
	want := []string{audit.LockSet + "/", audit.LockSet + "/2", audit.LockRemoved + "/", audit.LockSet + "/"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("entries %v, want %v", got, want)
	}
}
