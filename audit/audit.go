// Package audit keeps the relay's security audit log: registrations,
// registration-lock failures, devices added and removed, key uploads,
// attachment-bucket administration, operator actions and retention purges.
// Entries name accounts and devices by id only, never message content or
// phone numbers.
//
// The log is append-only and chained: each entry carries an HMAC-SHA256,
// under a key derived from the relay's root secret (kept outside the
// database), over the previous entry's MAC and its own fields. Changing,
// inserting or removing an entry breaks every MAC after it, and without the
// key the chain cannot be recomputed. Entries older than the retention are
// purged from the front; each purge is itself an entry recording where the
// log now starts, so a cut at the front is told apart from a purge.
//
// A cut at the end cannot be seen from inside the database: a shorter log
// is still a valid chain. So the log's head (the last entry's sequence
// number and MAC, see Head) is anchored outside it: the relay writes it to
// its server log as a checkpoint (Checkpoint), and VerifyAgainst fails when
// the log ends before a checkpoint's head or holds a different entry there.
//
// A key check value (an HMAC of a fixed label under the log's key) is stored
// with the log, so a verifier holding the wrong key gets ErrWrongKey, not
// ErrTampered, and the relay refuses to append under a key the log was not
// written with.
// Repeated identical events are coalesced so that a client repeating one
// request cannot flood a log kept for years: the first event of a kind,
// account, device and details is written at once; identical events in the
// following coalescing window (a minute by default) are only counted, and
// when the window has passed (at the next sweep, the next identical event,
// or shutdown) one entry with the same fields plus details "repeated" (how
// many further events it stands for) and "window_start" is written. Each
// replica coalesces its own events.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kinds of entries.
const (
	AccountRegistered   = "account.registered"
	AccountDeleted      = "account.deleted"
	LockFailed          = "account.registration_lock_failed"
	LockSet             = "account.registration_lock_set"
	LockRemoved         = "account.registration_lock_removed"
	DeviceLinked        = "device.linked"
	DeviceRemoved       = "device.removed"
	KeysUploaded        = "keys.uploaded"
	BucketCreated       = "bucket.created"
	BucketSecretRotated = "bucket.member_secret_rotated"
	BucketRetentionSet  = "bucket.retention_set"
	BucketDeleted       = "bucket.deleted"
	AdminDeviceRevoked  = "admin.device_revoked"
	AdminAccountDeleted = "admin.account_deleted"
	AdminPurge          = "admin.purge"
	AdminBackup         = "admin.backup"
	RetentionPurged     = "retention.purged"
	AuditPurged         = "audit.purged"
)

// Entry is one audit record. Account and Device are empty/0 when the event
// concerns no account (an operator action, a purge).
type Entry struct {
	Seq     int64             `json:"seq"`
	At      time.Time         `json:"at"`
	Kind    string            `json:"kind"`
	Account string            `json:"account,omitempty"`
	Device  int               `json:"device,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Prev    []byte            `json:"prev"`
	MAC     []byte            `json:"mac"`
}

// Store appends and reads entries.
type Store interface {
	// AppendAudit stores e as the entry after the current last one, in one
	// serialised transaction: it calls seal with the new entry's Seq set
	// and the last entry's MAC (nil for the first) to fill in Prev and MAC.
	AppendAudit(ctx context.Context, e Entry, seal func(*Entry, []byte)) (Entry, error)
	// AuditEntries returns up to limit entries with Seq > after, in order.
	AuditEntries(ctx context.Context, after int64, limit int) ([]Entry, error)
	// PurgeAudit deletes entries older than before (never the last one)
	// and returns the last one deleted (Seq 0 when none was).
	PurgeAudit(ctx context.Context, before time.Time) (Entry, error)
	// LastAudit returns the entry with the highest Seq (Seq 0 when the log
	// is empty).
	LastAudit(ctx context.Context) (Entry, error)
	// AuditKeyCheck returns the stored key check value, nil when none is.
	AuditKeyCheck(ctx context.Context) ([]byte, error)
	// SetAuditKeyCheck stores kc unless a value is already stored, and
	// returns the stored value (kc, or the earlier one), atomically.
	SetAuditKeyCheck(ctx context.Context, kc []byte) ([]byte, error)
}

// Log records entries.
type Log struct {
	store     Store
	key       []byte
	log       *slog.Logger
	now       func() time.Time
	retention time.Duration
	keyOK     atomic.Bool // CheckKey succeeded: appends may go on

	mu     sync.Mutex
	window time.Duration          // coalescing window; 0 writes every event
	recent map[string]*coalescing // by coalescingKey
}

// coalescing is an event written at start whose identical repeats until
// end are being counted.
type coalescing struct {
	kind, account string
	device        int
	details       map[string]string
	start, end    time.Time
	repeated      int
}

// DefaultCoalesceWindow is how long identical events are counted before
// their count is written.
const DefaultCoalesceWindow = time.Minute

// DefaultRetention is six years, the retention HIPAA asks for documentation.
const DefaultRetention = 6 * 365 * 24 * time.Hour

// New returns a Log over s, chaining entries with key (≥ 32 bytes, from the
// root secret) and keeping them for retention.
func New(s Store, key []byte, retention time.Duration, log *slog.Logger) (*Log, error) {
	if len(key) < 32 {
		return nil, errors.New("audit: key must be at least 32 bytes")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Log{store: s, key: key, log: log, now: time.Now, retention: retention,
		window: DefaultCoalesceWindow, recent: map[string]*coalescing{}}, nil
}

// SetCoalesceWindow sets how long identical events are counted before
// their count is written (0: every event is written).
func (l *Log) SetCoalesceWindow(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.window = d
}

// SetClock replaces the time source (tests and simulations).
func (l *Log) SetClock(now func() time.Time) { l.now = now }

// mac is HMAC-SHA256(key, "parley audit v1" ‖ prev ‖ fields), every field
// length-prefixed so no two entries encode alike.
func (l *Log) mac(e *Entry, prev []byte) []byte {
	m := hmac.New(sha256.New, l.key)
	var b [8]byte
	field := func(p []byte) {
		binary.BigEndian.PutUint64(b[:], uint64(len(p)))
		m.Write(b[:])
		m.Write(p)
	}
	num := func(v int64) {
		binary.BigEndian.PutUint64(b[:], uint64(v))
		m.Write(b[:])
	}
	field([]byte("parley audit v1"))
	field(prev)
	num(e.Seq)
	num(e.At.UnixMilli())
	field([]byte(e.Kind))
	field([]byte(e.Account))
	num(int64(e.Device))
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	num(int64(len(keys)))
	for _, k := range keys {
		field([]byte(k))
		field([]byte(e.Details[k]))
	}
	return m.Sum(nil)
}

// keyCheck is the log's key check value: HMAC-SHA256(key, label). It
// reveals nothing of the key and identifies it.
func (l *Log) keyCheck() []byte {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte("parley audit key check v1"))
	return m.Sum(nil)
}

// ErrWrongKey reports that the log was written under another key than the
// one given (another root secret), as opposed to ErrTampered.
var ErrWrongKey = errors.New("the audit key does not match this log: wrong root secret?")

// CheckKey makes sure the log is written under l's key: it compares the
// stored key check value, or, for a log that has none yet, checks the last
// entry's MAC and then stores the value. It returns an error wrapping
// ErrWrongKey when the key is not the log's. Record calls it before its
// first append; the relay calls it at start, to refuse the wrong secret.
func (l *Log) CheckKey(ctx context.Context) error {
	if l.keyOK.Load() {
		return nil
	}
	want := l.keyCheck()
	stored, err := l.store.AuditKeyCheck(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if stored == nil {
		last, err := l.store.LastAudit(ctx)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if last.Seq != 0 && !hmac.Equal(last.MAC, l.mac(&last, last.Prev)) {
			return fmt.Errorf("audit: %w (the last entry, %d, does not verify under this key; or it was altered: run parleyd admin audit verify)", ErrWrongKey, last.Seq)
		}
		if stored, err = l.store.SetAuditKeyCheck(ctx, want); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if !hmac.Equal(stored, want) {
		return fmt.Errorf("audit: %w", ErrWrongKey)
	}
	l.keyOK.Store(true)
	return nil
}

// Record appends an entry, or counts it when an identical one was written
// within the coalescing window (see the package documentation). A failure
// is logged at error level and returned; callers that must not fail the
// user's request log and go on.
func (l *Log) Record(ctx context.Context, kind, account string, device int, details map[string]string) error {
	if kind == AuditPurged { // the chain's proof of a purge: always written
		return l.write(ctx, kind, account, device, details)
	}
	now := l.now()
	key := coalescingKey(kind, account, device, details)
	l.mu.Lock()
	if l.window <= 0 {
		l.mu.Unlock()
		return l.write(ctx, kind, account, device, details)
	}
	c := l.recent[key]
	if c != nil && now.Before(c.end) {
		c.repeated++
		l.mu.Unlock()
		return nil
	}
	// A different event for the account: the counts pending for it are
	// written first and their windows closed, so the log keeps the order of
	// what happened to the account (set, removed, set stays three entries).
	var before []*coalescing
	if account != "" {
		for k, o := range l.recent {
			if k != key && o.account == account {
				delete(l.recent, k)
				if o.repeated > 0 {
					before = append(before, o)
				}
			}
		}
	}
	if c != nil && c.repeated > 0 {
		before = append(before, c)
	}
	l.recent[key] = &coalescing{kind: kind, account: account, device: device, details: maps.Clone(details), start: now, end: now.Add(l.window)}
	l.mu.Unlock()
	slices.SortFunc(before, func(a, b *coalescing) int { return a.start.Compare(b.start) })
	var errs []error
	for _, o := range before {
		errs = append(errs, l.writeRepeats(ctx, o))
	}
	return errors.Join(append(errs, l.write(ctx, kind, account, device, details))...)
}

// Flush writes the counts of identical events whose coalescing window has
// passed (every count, if all is set: at shutdown). The relay calls it at
// every sweep.
func (l *Log) Flush(ctx context.Context, all bool) error {
	now := l.now()
	var due []*coalescing
	l.mu.Lock()
	for k, c := range l.recent {
		if all || !now.Before(c.end) {
			delete(l.recent, k)
			if c.repeated > 0 {
				due = append(due, c)
			}
		}
	}
	l.mu.Unlock()
	slices.SortFunc(due, func(a, b *coalescing) int { return a.start.Compare(b.start) })
	var errs []error
	for _, c := range due {
		errs = append(errs, l.writeRepeats(ctx, c))
	}
	return errors.Join(errs...)
}

// writeRepeats writes the entry standing for c's counted repeats.
func (l *Log) writeRepeats(ctx context.Context, c *coalescing) error {
	d := maps.Clone(c.details)
	if d == nil {
		d = map[string]string{}
	}
	d["repeated"] = strconv.Itoa(c.repeated)
	d["window_start"] = c.start.UTC().Format(time.RFC3339Nano)
	return l.write(ctx, c.kind, c.account, c.device, d)
}

// coalescingKey encodes an event's fields unambiguously (length-prefixed,
// details sorted).
func coalescingKey(kind, account string, device int, details map[string]string) string {
	var b strings.Builder
	field := func(s string) { fmt.Fprintf(&b, "%d:%s", len(s), s) }
	field(kind)
	field(account)
	field(strconv.Itoa(device))
	for _, k := range slices.Sorted(maps.Keys(details)) {
		field(k)
		field(details[k])
	}
	return b.String()
}

// write appends one entry to the chain; nothing is appended under a key
// the log was not written with (ErrWrongKey).
func (l *Log) write(ctx context.Context, kind, account string, device int, details map[string]string) error {
	if err := l.CheckKey(ctx); err != nil {
		l.log.ErrorContext(ctx, "audit entry not written", "kind", kind, "err", err)
		return err
	}
	e := Entry{At: l.now().Truncate(time.Millisecond), Kind: kind, Account: account, Device: device, Details: details}
	_, err := l.store.AppendAudit(ctx, e, func(e *Entry, prev []byte) {
		e.Prev = prev
		e.MAC = l.mac(e, prev)
	})
	if err != nil {
		l.log.ErrorContext(ctx, "audit entry not written", "kind", kind, "err", err)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Purge deletes entries older than the retention and records the purge
// (with where the log now starts). It returns how far it purged.
func (l *Log) Purge(ctx context.Context) (int64, error) {
	last, err := l.store.PurgeAudit(ctx, l.now().Add(-l.retention))
	if err != nil || last.Seq == 0 {
		return 0, err
	}
	return last.Seq, l.Record(ctx, AuditPurged, "", 0, map[string]string{
		"through_seq": fmt.Sprint(last.Seq), "through_mac": fmt.Sprintf("%x", last.MAC)})
}

// Export writes every entry after seq as JSON lines.
func (l *Log) Export(ctx context.Context, after int64, w func(Entry) error) error {
	for {
		es, err := l.store.AuditEntries(ctx, after, 1000)
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := w(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(es) < 1000 {
			return nil
		}
	}
}

// ErrTampered reports a chain that does not verify.
var ErrTampered = errors.New("the audit log has been altered")

// Head identifies the end of the log at some moment: the last entry's
// sequence number (how many entries had been written, purged ones
// included) and its MAC. A head kept outside the database (the relay's
// checkpoint lines in its server log) shows a later cut at the end.
// Its text form is "SEQ:MAC" with the MAC in hex; the empty log is "0:".
type Head struct {
	Seq int64
	MAC []byte
}

// String returns "SEQ:MAC".
func (h Head) String() string { return fmt.Sprintf("%d:%x", h.Seq, h.MAC) }

// ParseHead parses the "SEQ:MAC" form of a Head.
func ParseHead(s string) (Head, error) {
	seq, mac, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 0 || seq != strconv.FormatInt(n, 10) {
		return Head{}, fmt.Errorf("audit head %q: want SEQ:MAC", s)
	}
	b, err := hex.DecodeString(mac)
	if err != nil || (n == 0) != (len(b) == 0) || (n > 0 && len(b) != sha256.Size) || mac != strings.ToLower(mac) {
		return Head{}, fmt.Errorf("audit head %q: want SEQ:MAC with a 64-digit lowercase hex MAC (empty only for 0)", s)
	}
	if len(b) == 0 {
		b = nil
	}
	return Head{Seq: n, MAC: b}, nil
}

// Head returns the log's current head.
func (l *Log) Head(ctx context.Context) (Head, error) {
	last, err := l.store.LastAudit(ctx)
	if err != nil {
		return Head{}, fmt.Errorf("audit head: %w", err)
	}
	return Head{Seq: last.Seq, MAC: last.MAC}, nil
}

// Checkpoint writes the log's head to the server log at info level
// ("audit checkpoint", head=SEQ:MAC), to be kept where whoever can write
// the database cannot rewrite it (a log collector, a SIEM). The head holds
// no secret.
func (l *Log) Checkpoint(ctx context.Context) error {
	h, err := l.Head(ctx)
	if err != nil {
		l.log.WarnContext(ctx, "audit checkpoint failed", "err", err)
		return err
	}
	// Warn, not Info: a checkpoint must reach the log at the levels
	// production runs at, or truncation goes unseen.
	l.log.WarnContext(ctx, "audit checkpoint", "head", h.String(), "entries_written", h.Seq)
	return nil
}

// Verify checks the whole chain and returns how many entries it checked
// and the first and last sequence numbers. A log that does not start at 1
// must start right after a purge that an entry records. A broken chain is
// ErrTampered; a key that is not the log's is ErrWrongKey. Verify cannot
// see entries cut from the end: use VerifyAgainst with a checkpoint.
func (l *Log) Verify(ctx context.Context) (n int, first, last int64, err error) {
	return l.verify(ctx, nil)
}

// VerifyAgainst is Verify that also fails (ErrTampered) unless the log
// still holds the entry at head.Seq with head.MAC, as a checkpoint saw it:
// a log cut at the end, or emptied, or cut and appended to again, fails.
// Entries after the head (written since) are fine.
func (l *Log) VerifyAgainst(ctx context.Context, head Head) (n int, first, last int64, err error) {
	return l.verify(ctx, &head)
}

func (l *Log) verify(ctx context.Context, head *Head) (n int, first, last int64, err error) {
	stored, err := l.store.AuditKeyCheck(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("audit: %w", err)
	}
	keyMatches := stored != nil && hmac.Equal(stored, l.keyCheck())
	var prev, startPrev, atHead []byte
	var broken error             // the first break in the chain
	macsOK := 0                  // entries whose own MAC verifies under the key
	purges := map[int64]string{} // through_seq → through_mac
	err = l.Export(ctx, 0, func(e Entry) error {
		own := hmac.Equal(e.MAC, l.mac(&e, e.Prev))
		if own {
			macsOK++
		}
		if broken == nil {
			switch {
			case n == 0:
				first, startPrev = e.Seq, e.Prev
				if e.Seq == 1 && e.Prev != nil {
					broken = fmt.Errorf("%w: the first entry claims a predecessor", ErrTampered)
				}
			case e.Seq != last+1:
				broken = fmt.Errorf("%w: entries %d to %d are missing", ErrTampered, last+1, e.Seq-1)
			case !hmac.Equal(e.Prev, prev):
				broken = fmt.Errorf("%w: entry %d does not follow entry %d", ErrTampered, e.Seq, last)
			}
			if broken == nil && !own {
				broken = fmt.Errorf("%w: entry %d was changed", ErrTampered, e.Seq)
			}
		}
		if e.Kind == AuditPurged && own {
			purges[parseSeq(e.Details["through_seq"])] = e.Details["through_mac"]
		}
		if head != nil && e.Seq == head.Seq {
			atHead = e.MAC
		}
		prev, last = e.MAC, e.Seq
		n++
		return nil
	})
	if err != nil {
		return n, first, last, err
	}
	// With the wrong key no entry verifies; tampering leaves the others
	// intact. A stored key check value that differs while entries verify
	// was itself replaced.
	if !keyMatches && macsOK == 0 && (stored != nil || n > 0) {
		return n, first, last, fmt.Errorf("%w (no entry of %d verifies under this key)", ErrWrongKey, n)
	}
	if broken != nil {
		return n, first, last, broken
	}
	if stored != nil && !keyMatches {
		return n, first, last, fmt.Errorf("%w: the stored key check value was replaced (the entries verify under this key)", ErrTampered)
	}
	if n > 0 && first != 1 {
		if mac, ok := purges[first-1]; !ok || mac != fmt.Sprintf("%x", startPrev) {
			return n, first, last, fmt.Errorf("%w: entries before %d were removed without a recorded purge", ErrTampered, first)
		}
	}
	if head == nil || head.Seq == 0 {
		return n, first, last, nil
	}
	switch {
	case n == 0:
		return n, first, last, fmt.Errorf("%w: the log is empty, but checkpoint %s saw %d entries written: they were removed", ErrTampered, head, head.Seq)
	case last < head.Seq:
		return n, first, last, fmt.Errorf("%w: the log ends at entry %d, but checkpoint %s saw entry %d: entries %d to %d were removed from the end",
			ErrTampered, last, head, head.Seq, last+1, head.Seq)
	case atHead != nil && !hmac.Equal(atHead, head.MAC):
		return n, first, last, fmt.Errorf("%w: entry %d is not the one checkpoint %s saw: the log was cut and written again", ErrTampered, head.Seq, head)
	case atHead == nil:
		if mac, ok := purges[head.Seq]; ok && mac == hex.EncodeToString(head.MAC) {
			return n, first, last, nil
		}
		return n, first, last, fmt.Errorf("entry %d of checkpoint %s has been purged by retention; verify against a later checkpoint", head.Seq, head)
	}
	return n, first, last, nil
}

func parseSeq(s string) int64 {
	var v int64
	fmt.Sscan(s, &v)
	return v
}

// MarshalLine encodes an entry for export.
func MarshalLine(e Entry) ([]byte, error) { return json.Marshal(e) }
