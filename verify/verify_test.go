package verify_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/verify"
)

// codes records the codes a Service sends, as an SMS would; during, if
// set, runs (once) while a code is being sent.
type codes struct {
	mu     sync.Mutex
	sent   []string
	during func()
}

func (c *codes) SendCode(_ context.Context, _ phone.Number, code string) error {
	c.mu.Lock()
	f := c.during
	c.during = nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, code)
	return nil
}

func (c *codes) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[len(c.sent)-1]
}

// racingStore runs beforeCheck once, right after Check has read the
// session and before it counts the attempt: where a concurrent resend
// lands when it races a check.
type racingStore struct {
	*store.DB
	beforeCheck func()
}

func (r *racingStore) ReserveAttempt(ctx context.Context, id [32]byte, max int, now time.Time) (verify.Session, error) {
	if f := r.beforeCheck; f != nil {
		r.beforeCheck = nil
		f()
	}
	return r.DB.ReserveAttempt(ctx, id, max, now)
}

// fixture is a Service on a fresh SQLite store with a clock the test moves.
type fixture struct {
	db    *store.DB
	sms   *codes
	svc   *verify.Service
	clock time.Time
}

// newFixture builds a fixture; wrap, if set, puts a Store in front of the
// database.
func newFixture(t *testing.T, cfg verify.Config, wrap func(*store.DB) verify.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	hasher, err := phone.NewHasher(bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, sms: &codes{}, clock: time.UnixMilli(1_800_000_000_000)}
	var st verify.Store = db
	if wrap != nil {
		st = wrap(db)
	}
	f.svc, err = verify.New(cfg, verify.Options{
		Store: st, Sender: f.sms, Hasher: hasher, CodeKey: bytes.Repeat([]byte{3}, 32),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return f.clock },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A code replaced by a resend is refused even when the check read the
// session before the resend stored the new code.
func TestCodeReplacedDuringCheckIsRefused(t *testing.T) {
	ctx := context.Background()
	st := &racingStore{}
	f := newFixture(t, verify.Config{}, func(db *store.DB) verify.Store { st.DB = db; return st })
	svc, sms := f.svc, f.sms
	const number = "+15555550123"
	id, _, err := svc.Start(ctx, number, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	first := sms.last()
	f.clock = f.clock.Add(31 * time.Second)
	st.beforeCheck = func() {
		if _, err := svc.Resend(ctx, id, number, "192.0.2.1"); err != nil {
			t.Errorf("resend: %v", err)
		}
	}
	_, err = svc.Check(ctx, id, first)
	if sms.last() == first {
		t.Skip("the resend drew the same code (1 in a million)")
	}
	if err == nil {
		t.Fatal("the replaced code verified the session")
	}
	stt, err := svc.Check(ctx, id, sms.last())
	if err != nil || !stt.Verified {
		t.Fatalf("the new code: %+v, %v", stt, err)
	}
}

// The previous code stops working as soon as a resend starts, not only
// once the new code is stored: a check made while the SMS goes out fails.
func TestCodeDuringResendIsRefused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, verify.Config{}, nil)
	svc, sms := f.svc, f.sms
	const number = "+15555550125"
	id, _, err := svc.Start(ctx, number, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	first := sms.last()
	f.clock = f.clock.Add(31 * time.Second)
	var during verify.State
	var duringErr error
	sms.during = func() { during, duringErr = svc.Check(ctx, id, first) }
	if _, err := svc.Resend(ctx, id, number, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if duringErr == nil || during.Verified {
		t.Fatalf("the old code during the resend: %+v, %v", during, duringErr)
	}
	if sms.last() == first {
		t.Skip("the resend drew the same code (1 in a million)")
	}
	if st, err := svc.Check(ctx, id, sms.last()); err != nil || !st.Verified {
		t.Fatalf("the new code: %+v, %v", st, err)
	}
}

// Parallel checks of the right code, more than the attempts allowed: the
// session ends verified, and no check fails for another reason (one that
// lost the race to record success answers as verified).
func TestParallelChecksOfTheRightCode(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, verify.Config{MaxAttempts: 2}, nil)
	svc, sms := f.svc, f.sms
	id, _, err := svc.Start(ctx, "+15555550124", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	code := sms.last()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			st, err := svc.Check(ctx, id, code)
			// A check that finds no attempt left before the winner has
			// recorded its success says so: both are true at that moment.
			if err != nil && !errors.Is(err, verify.ErrNoAttemptsLeft) || err == nil && !st.Verified {
				t.Errorf("check = %+v, %v", st, err)
			}
		})
	}
	wg.Wait()
	if st, err := svc.State(ctx, id); err != nil || !st.Verified {
		t.Fatalf("state = %+v, %v", st, err)
	}
}
