package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/store"
)

var relayTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"EnqueueAndDeliver", testEnqueue},
	{"EnqueueCheckedAtomically", testEnqueueCheck},
	{"Idempotency", testIdempotency},
	{"ConcurrentIdempotentRetries", testConcurrentIdempotency},
	{"QueueCaps", testQueueCaps},
	{"SenderShares", testSenderShares},
	{"ExpiryAndPurge", testExpiry},
	{"ConcurrentSendersNeverSkipped", testCursorUnderConcurrency},
	{"QueuesCascade", testQueueCascade},
	{"BatchFailuresStayAlone", testBatchFailures},
	{"BatchCountsAsItGoes", testBatchCounts},
	{"QueueCountersFollowDeletes", testQueueCounters},
	{"StoredEnvelopesChain", testStoredChain},
	{"SharedContentStoredOnce", testSharedContent},
}

func addDevice(t *testing.T, db *store.DB, account uuid.UUID, regID int) int {
	t.Helper()
	id, err := db.AddDevice(context.Background(), account, accounts.NewDevice{
		RegistrationID: regID, Credential: random(accounts.HashedSize),
		SignedPreKey: keys.SignedPreKey{ID: 1, PublicKey: ecKey(), Signature: sig()}, LastResort: kemKey(1),
	}, today())
	if err != nil {
		t.Fatalf("AddDevice: %v", err)
	}
	return id
}

// batch is a send of one envelope per device from (from, 1) to `to`.
func batch(from, to uuid.UUID, devices ...int) relay.Batch {
	b := relay.Batch{Sender: accounts.Principal{Account: from, Device: 1}, Destination: to, Now: now}
	for _, d := range devices {
		b.Envelopes = append(b.Envelopes, relay.Envelope{
			ID: uuid.New(), Type: 3, SourceAccount: from, SourceDevice: 1, DestDevice: d,
			ClientTimestamp: 1234, ServerTimestamp: now, ExpiresAt: now.Add(time.Hour), Urgent: true,
			Content: []byte(fmt.Sprintf("ciphertext for %d %s", d, uuid.NewString())),
		})
	}
	return b
}

func accept([]accounts.Device) error { return nil }

// acks acknowledges envelopes of one device.
func acks(account uuid.UUID, device int, seqs ...int64) []relay.Ack {
	out := make([]relay.Ack, len(seqs))
	for i, seq := range seqs {
		out[i] = relay.Ack{Account: account, Device: device, Seq: seq}
	}
	return out
}

func pending(t *testing.T, db *store.DB, account uuid.UUID, device int) []relay.Envelope {
	t.Helper()
	es, err := db.Pending(context.Background(), account, device, 0, now, 1000)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return es
}

func testEnqueue(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	addDevice(t, db, b, 77)
	var seen []accounts.Device
	bt := batch(a, b, 1, 2)
	rc, err := db.Enqueue(ctx, bt, func(ds []accounts.Device) error { seen = ds; return nil })
	if err != nil || rc.Replayed || !rc.ServerTimestamp.Equal(now) {
		t.Fatalf("Enqueue = %+v, %v", rc, err)
	}
	if len(seen) != 2 || seen[0].ID != 1 || seen[0].RegistrationID != 42 || seen[1].ID != 2 || seen[1].RegistrationID != 77 {
		t.Errorf("check saw devices %+v", seen)
	}
	for i, dev := range []int{1, 2} {
		got := pending(t, db, b, dev)
		if len(got) != 1 {
			t.Fatalf("device %d has %d envelopes, want 1", dev, len(got))
		}
		g, w := got[0], bt.Envelopes[i]
		if g.ID != w.ID || g.Type != 3 || g.SourceAccount != a || g.SourceDevice != 1 || g.DestDevice != dev ||
			g.ClientTimestamp != 1234 || !g.ServerTimestamp.Equal(now) || !g.ExpiresAt.Equal(w.ExpiresAt) || !g.Urgent ||
			!bytes.Equal(g.Content, w.Content) || g.Seq <= 0 {
			t.Errorf("device %d got %+v, want %+v", dev, g, w)
		}
	}
	if got := pending(t, db, a, 1); len(got) != 0 {
		t.Errorf("sender's queue has %d envelopes", len(got))
	}
	// Cursor and delete.
	first := pending(t, db, b, 1)[0]
	if more, _ := db.Pending(ctx, b, 1, first.Seq, now, 10); len(more) != 0 {
		t.Errorf("Pending after the last seq returned %d", len(more))
	}
	if err := db.Delete(ctx, acks(b, 1, first.Seq, first.Seq+1_000_000)); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, db, b, 1); len(got) != 0 {
		t.Errorf("acknowledged envelope still queued")
	}
	if got := pending(t, db, b, 2); len(got) != 1 {
		t.Errorf("deleting device 1's envelope touched device 2's queue")
	}
	// Many deletions in one call, across statement sizes.
	var seqs []int64
	for range 300 {
		if _, err := db.Enqueue(ctx, batch(a, b, 1), accept); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range pending(t, db, b, 1) {
		seqs = append(seqs, e.Seq)
	}
	if err := db.Delete(ctx, acks(b, 1, seqs[:299]...)); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, db, b, 1); len(got) != 1 || got[0].Seq != seqs[299] {
		t.Errorf("after deleting 299 of 300: %d left", len(got))
	}
}

func testEnqueueCheck(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	refuse := errors.New("refused")
	if _, err := db.Enqueue(ctx, batch(a, b, 1), func([]accounts.Device) error { return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("err = %v, want the check's", err)
	}
	if got := pending(t, db, b, 1); len(got) != 0 {
		t.Errorf("refused send stored %d envelopes", len(got))
	}
	// An unknown account has no devices; the check sees an empty list.
	var seen []accounts.Device
	_, _ = db.Enqueue(ctx, batch(a, uuid.New(), 1), func(ds []accounts.Device) error { seen = ds; return refuse })
	if len(seen) != 0 {
		t.Errorf("unknown account has devices %+v", seen)
	}
	// A failure after some envelopes were written leaves none behind:
	// device 2 does not exist, so its insert violates the foreign key.
	if _, err := db.Enqueue(ctx, batch(a, b, 1, 2), accept); err == nil {
		t.Fatal("envelope for a missing device was stored")
	}
	if got := pending(t, db, b, 1); len(got) != 0 {
		t.Errorf("half a failed send was stored: %d envelopes", len(got))
	}
}

func keyed(b relay.Batch, key, req string) relay.Batch {
	b.Key = bytes.Repeat([]byte(key[:1]), 32)
	b.RequestHash = bytes.Repeat([]byte(req[:1]), 32)
	b.KeyExpires = b.Now.Add(24 * time.Hour)
	return b
}

func testIdempotency(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	first := keyed(batch(a, b, 1), "k", "r")
	rc, err := db.Enqueue(ctx, first, accept)
	if err != nil || rc.Replayed {
		t.Fatalf("first send: %+v, %v", rc, err)
	}
	retry := keyed(batch(a, b, 1), "k", "r")
	retry.Now = now.Add(time.Minute)
	rc2, err := db.Enqueue(ctx, retry, func([]accounts.Device) error { return errors.New("must not be checked") })
	if err != nil || !rc2.Replayed || !rc2.ServerTimestamp.Equal(rc.ServerTimestamp) {
		t.Fatalf("retry: %+v, %v; want the first receipt replayed", rc2, err)
	}
	if got := pending(t, db, b, 1); len(got) != 1 || got[0].ID != first.Envelopes[0].ID {
		t.Fatalf("retry stored something: %d envelopes", len(got))
	}
	if _, err := db.Enqueue(ctx, keyed(batch(a, b, 1), "k", "x"), accept); !errors.Is(err, relay.ErrIdempotencyKeyUsed) {
		t.Errorf("key reused for another request: err = %v", err)
	}
	// The key is per sending device: another sender may use the same one.
	other := keyed(batch(b, a, 1), "k", "r")
	other.Sender = accounts.Principal{Account: b, Device: 1}
	if rc, err := db.Enqueue(ctx, other, accept); err != nil || rc.Replayed {
		t.Errorf("another sender's key: %+v, %v", rc, err)
	}
	// After the window the key is forgotten.
	late := keyed(batch(a, b, 1), "k", "x")
	late.Now = now.Add(25 * time.Hour)
	if rc, err := db.Enqueue(ctx, late, accept); err != nil || rc.Replayed {
		t.Errorf("expired key: %+v, %v", rc, err)
	}
}

func testConcurrentIdempotency(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 10 {
		wg.Go(func() {
			rc, err := db.Enqueue(ctx, keyed(batch(a, b, 1), "c", "r"), accept)
			if err != nil {
				t.Error(err)
				return
			}
			if !rc.Replayed {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := pending(t, db, b, 1); len(got) != 1 || fresh != 1 {
		t.Errorf("10 concurrent retries stored %d envelopes, %d answered as new; want 1 and 1", len(got), fresh)
	}
}

// testQueueCaps: a full device is skipped and named, the other devices
// still get the send; only a send that would reach no device is refused.
func testQueueCaps(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	addDevice(t, db, b, 7)
	capped := func(bt relay.Batch) relay.Batch {
		bt.QueueMaxEnvelopes, bt.QueueMaxBytes = 3, 1<<20
		return bt
	}
	for range 3 {
		if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := db.Enqueue(ctx, capped(batch(a, b, 1, 2)), accept)
	want := []relay.Skipped{{Account: b, Device: 1, Reason: relay.SkipQueueFull}}
	if err != nil || !slices.Equal(rc.Skipped, want) {
		t.Fatalf("fourth envelope: %+v, %v; want device 1 skipped as full", rc, err)
	}
	if got := pending(t, db, b, 2); len(got) != 1 {
		t.Errorf("device 2 has %d envelopes, want the one its full sibling did not block", len(got))
	}
	if got := pending(t, db, b, 1); len(got) != 3 {
		t.Errorf("full device 1 has %d envelopes, want 3", len(got))
	}
	var full *relay.QueueFullError
	if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); !errors.As(err, &full) || full.Account != b || !slices.Equal(full.Devices, []int{1}) {
		t.Fatalf("send to the full device alone: err = %v, want queue full for device 1", err)
	}
	big := batch(a, b, 2)
	big.Envelopes[0].Content = make([]byte, 60<<10)
	big.QueueMaxBytes = 100 << 10
	if _, err := db.Enqueue(ctx, big, accept); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Enqueue(ctx, big, accept); !errors.As(err, &full) {
		t.Errorf("byte cap: err = %v", err)
	}
}

// testSenderShares: one sender fills at most its share of a device's queue;
// other senders, and the account's own devices, still reach it, and a
// replayed answer names the same skipped devices.
func testSenderShares(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	c, _ := register(t, db, 0)
	addDevice(t, db, b, 7)
	shared := func(bt relay.Batch) relay.Batch {
		bt.QueueMaxEnvelopes, bt.QueueMaxBytes = 10, 1<<20
		bt.QueueSenderMaxEnvelopes, bt.QueueSenderMaxBytes = 2, 1<<20
		return bt
	}
	for range 2 {
		if _, err := db.Enqueue(ctx, shared(batch(a, b, 1)), accept); err != nil {
			t.Fatal(err)
		}
	}
	var full *relay.QueueFullError
	if _, err := db.Enqueue(ctx, shared(batch(a, b, 1)), accept); !errors.As(err, &full) || !slices.Equal(full.Devices, []int{1}) {
		t.Fatalf("past the sender's share: err = %v, want queue full for device 1", err)
	}
	// Its share of device 1 is used up, device 2 still takes its sends.
	first := keyed(shared(batch(a, b, 1, 2)), "s", "r")
	rc, err := db.Enqueue(ctx, first, accept)
	want := []relay.Skipped{{Account: b, Device: 1, Reason: relay.SkipSenderShare}}
	if err != nil || !slices.Equal(rc.Skipped, want) {
		t.Fatalf("share used on device 1: %+v, %v; want device 1 skipped", rc, err)
	}
	rc, err = db.Enqueue(ctx, keyed(shared(batch(a, b, 1, 2)), "s", "r"), accept)
	if err != nil || !rc.Replayed || !slices.Equal(rc.Skipped, want) {
		t.Errorf("replay: %+v, %v; want the skipped device again", rc, err)
	}
	// Another sender is not affected, nor is the account itself.
	if rc, err := db.Enqueue(ctx, shared(batch(c, b, 1)), accept); err != nil || len(rc.Skipped) != 0 {
		t.Errorf("another sender: %+v, %v", rc, err)
	}
	own := shared(batch(b, b, 1))
	own.Sender.Device = 2
	for range 3 {
		if rc, err := db.Enqueue(ctx, own, accept); err != nil || len(rc.Skipped) != 0 {
			t.Errorf("the account's own device: %+v, %v", rc, err)
		}
		own.Envelopes[0].ID = uuid.New()
	}
	if got := pending(t, db, b, 1); len(got) != 2+1+3 {
		t.Errorf("device 1 has %d envelopes, want 6", len(got))
	}
	// Acknowledging frees the share.
	var seqs []int64
	for _, e := range pending(t, db, b, 1) {
		if e.SourceAccount == a {
			seqs = append(seqs, e.Seq)
		}
	}
	if err := db.Delete(ctx, acks(b, 1, seqs[:1]...)); err != nil {
		t.Fatal(err)
	}
	if rc, err := db.Enqueue(ctx, shared(batch(a, b, 1)), accept); err != nil || len(rc.Skipped) != 0 {
		t.Errorf("after an acknowledgement: %+v, %v", rc, err)
	}
	// A multi-recipient send skips per device and stores the rest.
	d, _ := register(t, db, 0)
	mb := relay.MultiBatch{Sender: accounts.Principal{Account: a, Device: 1}, Now: now,
		QueueMaxEnvelopes: 10, QueueMaxBytes: 1 << 20, QueueSenderMaxEnvelopes: 2, QueueSenderMaxBytes: 1 << 20}
	for _, to := range []uuid.UUID{b, d} {
		mb.Parts = append(mb.Parts, relay.Part{Destination: to, Envelopes: batch(a, to, 1).Envelopes})
	}
	slices.SortFunc(mb.Parts, func(x, y relay.Part) int { return bytes.Compare(x.Destination[:], y.Destination[:]) })
	rc, err = db.EnqueueMulti(ctx, mb, func(map[uuid.UUID][]accounts.Device) error { return nil })
	if err != nil || !slices.Equal(rc.Skipped, want) {
		t.Errorf("multi-recipient: %+v, %v; want b's device 1 skipped", rc, err)
	}
	if got := pending(t, db, d, 1); len(got) != 1 {
		t.Errorf("the other recipient has %d envelopes, want 1", len(got))
	}
}

func testExpiry(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	short := batch(a, b, 1)
	short.Envelopes[0].ExpiresAt = now.Add(time.Minute)
	long := batch(a, b, 1)
	for _, bt := range []relay.Batch{short, long, keyed(batch(a, b, 1), "e", "r")} {
		if _, err := db.Enqueue(ctx, bt, accept); err != nil {
			t.Fatal(err)
		}
	}
	later := now.Add(2 * time.Minute)
	got, err := db.Pending(ctx, b, 1, 0, later, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("Pending after expiry = %d envelopes, %v; want 2 (the expired one hidden)", len(got), err)
	}
	n, err := db.PurgeExpired(ctx, later, 1000)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpired = %d, %v; want 1", n, err)
	}
	if got := pending(t, db, b, 1); len(got) != 2 {
		t.Errorf("purge removed live envelopes: %d left", len(got))
	}
	n, err = db.PurgeExpired(ctx, now.Add(25*time.Hour), 1)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpired with limit 1 = %d, %v", n, err)
	}
	rows, _ := db.DumpTable(ctx, "send_receipts")
	if len(rows) != 0 {
		t.Errorf("expired idempotency keys kept: %d", len(rows))
	}
}

// Concurrent senders to one device, with a reader following its cursor the
// way a connection does: every envelope is seen exactly once, in seq order.
func testCursorUnderConcurrency(t *testing.T, db *store.DB) {
	ctx := context.Background()
	b, _ := register(t, db, 0)
	const senders, each = 8, 25
	from := make([]uuid.UUID, senders)
	for i := range from {
		from[i], _ = register(t, db, 0)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for range each {
				if _, err := db.Enqueue(ctx, batch(from[i], b, 1), accept); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	seen := map[uuid.UUID]bool{}
	var cursor int64
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		es, err := db.Pending(ctx, b, 1, cursor, now, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Seq <= cursor || seen[e.ID] {
				t.Fatalf("envelope %v out of order or repeated", e.ID)
			}
			seen[e.ID] = true
			cursor = e.Seq
		}
		if len(es) == 7 {
			finished = false
		}
	}
	for {
		es, _ := db.Pending(ctx, b, 1, cursor, now, 100)
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			seen[e.ID] = true
			cursor = e.Seq
		}
	}
	if all := pending(t, db, b, 1); len(seen) != senders*each || len(all) != senders*each {
		t.Errorf("reader saw %d envelopes by cursor; queue holds %d; want %d", len(seen), len(all), senders*each)
	}
}

func testQueueCascade(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	addDevice(t, db, b, 9)
	if _, err := db.Enqueue(ctx, batch(a, b, 1, 2), accept); err != nil {
		t.Fatal(err)
	}
	if err := db.RemoveDevice(ctx, b, 2); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, db, b, 2); len(got) != 0 {
		t.Errorf("removed device's queue kept %d envelopes", len(got))
	}
	if err := db.DeleteAccount(ctx, b); err != nil {
		t.Fatal(err)
	}
	rows, _ := db.DumpTable(ctx, "envelopes")
	if len(rows) != 0 {
		t.Errorf("deleted account's envelopes kept: %d", len(rows))
	}
}

// testBatchFailures: in one batch (group commit), requests refused on
// their merits and one that fails in the database fail alone; the others
// are stored and answered.
func testBatchFailures(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	refuse := errors.New("refused by check")
	// An acknowledgement rides along with the batch.
	if _, err := db.Enqueue(ctx, batch(a, b, 1), accept); err != nil {
		t.Fatal(err)
	}
	earlier := pending(t, db, b, 1)[0]
	tooBig := batch(a, b, 1) // violates the content length constraint
	tooBig.Envelopes[0].Content = make([]byte, 200<<10)
	reqs := []relay.Request{
		{Batch: batch(a, b, 1).Multi(), Check: acceptAll},
		{Batch: batch(a, b, 1).Multi(), Check: func(map[uuid.UUID][]accounts.Device) error { return refuse }},
		{Batch: tooBig.Multi(), Check: acceptAll},
		{Batch: batch(a, uuid.New(), 1).Multi(), Check: acceptAll}, // no such account
		{Batch: batch(a, b, 1).Multi(), Check: acceptAll},
	}
	res, err := db.EnqueueBatch(ctx, reqs, acks(b, 1, earlier.Seq))
	if err != nil {
		t.Fatalf("acknowledgement in a failing batch: %v", err)
	}
	if len(res) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(res), len(reqs))
	}
	for _, i := range []int{0, 4} {
		if res[i].Err != nil || len(res[i].Stored) != 1 || res[i].Stored[0].Envelope.Seq <= 0 {
			t.Errorf("request %d: %+v, want stored", i, res[i])
		}
	}
	if !errors.Is(res[1].Err, refuse) {
		t.Errorf("refused request: %v", res[1].Err)
	}
	for _, i := range []int{1, 2, 3} {
		if res[i].Err == nil || len(res[i].Stored) != 0 {
			t.Errorf("request %d: %+v, want an error and nothing stored", i, res[i])
		}
	}
	got := pending(t, db, b, 1)
	if len(got) != 2 || got[0].ID != reqs[0].Batch.Parts[0].Envelopes[0].ID || got[1].ID != reqs[4].Batch.Parts[0].Envelopes[0].ID {
		t.Errorf("queue holds %d envelopes, want requests 0 and 4 in order", len(got))
	}
}

func acceptAll(map[uuid.UUID][]accounts.Device) error { return nil }

// testBatchCounts: requests of one batch see each other's envelopes in the
// caps, and a key used twice in a batch stores once.
func testBatchCounts(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	var reqs []relay.Request
	for range 3 {
		bt := batch(a, b, 1)
		bt.QueueMaxEnvelopes = 2
		reqs = append(reqs, relay.Request{Batch: bt.Multi(), Check: acceptAll})
	}
	same := keyed(batch(a, b, 1), "key", "same request")
	reqs = append(reqs, relay.Request{Batch: same.Multi(), Check: acceptAll}, relay.Request{Batch: same.Multi(), Check: acceptAll})
	res, _ := db.EnqueueBatch(ctx, reqs, nil)
	var full *relay.QueueFullError
	if res[0].Err != nil || res[1].Err != nil || !errors.As(res[2].Err, &full) {
		t.Errorf("three sends to a queue capped at 2: %v, %v, %v", res[0].Err, res[1].Err, res[2].Err)
	}
	if res[3].Err != nil || res[3].Receipt.Replayed || res[4].Err != nil || !res[4].Receipt.Replayed || len(res[4].Stored) != 0 {
		t.Errorf("one key twice in a batch: %+v then %+v, want stored then replayed", res[3], res[4])
	}
	if got := pending(t, db, b, 1); len(got) != 3 {
		t.Errorf("queue holds %d envelopes, want 3", len(got))
	}
}

// testQueueCounters: the counters a send checks its caps against follow
// acknowledgements and purges, so a queue that drains takes sends again,
// and they cost the same at any depth (the benchmark shows it).
func testQueueCounters(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	capped := func(bt relay.Batch) relay.Batch {
		bt.QueueMaxEnvelopes, bt.QueueMaxBytes = 4, 1<<20
		bt.QueueSenderMaxEnvelopes, bt.QueueSenderMaxBytes = 3, 1<<20
		return bt
	}
	short := capped(batch(a, b, 1))
	short.Envelopes[0].ExpiresAt = now.Add(time.Minute)
	if _, err := db.Enqueue(ctx, short, accept); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); err != nil {
			t.Fatal(err)
		}
	}
	var full *relay.QueueFullError
	if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); !errors.As(err, &full) {
		t.Fatalf("share of 3 used: err = %v, want queue full", err)
	}
	if n, err := db.PurgeExpired(ctx, now.Add(2*time.Minute), 100); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); err != nil {
		t.Fatalf("after the purge freed one: %v", err)
	}
	c, _ := register(t, db, 0)
	if _, err := db.Enqueue(ctx, capped(batch(c, b, 1)), accept); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Enqueue(ctx, capped(batch(c, b, 1)), accept); !errors.As(err, &full) {
		t.Fatalf("queue of 4 full: err = %v, want queue full", err)
	}
	var seqs []int64
	for _, e := range pending(t, db, b, 1) {
		seqs = append(seqs, e.Seq)
	}
	if err := db.Delete(ctx, acks(b, 1, seqs...)); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(ctx, acks(b, 1, seqs...)); err != nil { // acknowledged twice
		t.Fatal(err)
	}
	// The purge forgets the emptied shares.
	if _, err := db.PurgeExpired(ctx, now, 100); err != nil {
		t.Fatal(err)
	}
	if rows, err := db.DumpTable(ctx, "queue_shares"); err != nil || len(rows) != 0 {
		t.Errorf("after the drain and a purge, queue_shares holds %v (%v)", rows, err)
	}
	for range 3 {
		if _, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); err != nil {
			t.Fatalf("after the queue drained: %v", err)
		}
	}
	if _, err := db.Enqueue(ctx, capped(batch(c, b, 1)), accept); err != nil {
		t.Fatalf("fourth of 4 after the drain: %v", err)
	}
	if _, err := db.Enqueue(ctx, capped(batch(c, b, 1)), accept); !errors.As(err, &full) {
		t.Fatalf("fifth of 4 after the drain: err = %v, want queue full", err)
	}
}

// testStoredChain: each stored envelope names the seq queued for its
// device just before it, across batches and within one.
func testStoredChain(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	addDevice(t, db, b, 7)
	var reqs []relay.Request
	for range 3 {
		reqs = append(reqs, relay.Request{Batch: batch(a, b, 1, 2).Multi(), Check: acceptAll})
	}
	prev := map[int]int64{1: 0, 2: 0}
	for round := range 2 {
		res, _ := db.EnqueueBatch(ctx, reqs, nil)
		var stored []relay.Stored
		for _, r := range res {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			stored = append(stored, r.Stored...)
		}
		slices.SortFunc(stored, func(x, y relay.Stored) int { return int(x.Envelope.Seq - y.Envelope.Seq) })
		for _, st := range stored {
			d := st.Envelope.DestDevice
			if st.Account != b || st.Envelope.Prev != prev[d] || st.Envelope.Seq <= prev[d] {
				t.Fatalf("round %d: device %d envelope seq %d prev %d, want prev %d", round, d, st.Envelope.Seq, st.Envelope.Prev, prev[d])
			}
			prev[d] = st.Envelope.Seq
		}
		for i := range reqs {
			reqs[i].Batch = batch(a, b, 1, 2).Multi()
		}
	}
	if got := pending(t, db, b, 1); got[len(got)-1].Seq != prev[1] || len(got) != 6 {
		t.Errorf("device 1's queue ends at seq %d (%d envelopes), chain at %d", got[len(got)-1].Seq, len(got), prev[1])
	}
	// Acknowledging everything does not restart the chain.
	var seqs []int64
	for _, e := range pending(t, db, b, 1) {
		seqs = append(seqs, e.Seq)
	}
	if err := db.Delete(ctx, acks(b, 1, seqs...)); err != nil {
		t.Fatal(err)
	}
	res, _ := db.EnqueueBatch(ctx, []relay.Request{{Batch: batch(a, b, 1, 2).Multi(), Check: acceptAll}}, nil)
	if res[0].Err != nil || res[0].Stored[0].Envelope.Prev != prev[1] {
		t.Errorf("after the drain: %+v, want prev %d", res[0], prev[1])
	}
}

// testSharedContent: a multi-recipient send stores its ciphertext once for
// every recipient device; each device still receives it, and the shared
// row goes once no envelope points at it (acknowledged, or its device
// removed).
func testSharedContent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	c, _ := register(t, db, 0)
	addDevice(t, db, b, 7)
	content := []byte("one group message, encrypted once")
	mb := relay.MultiBatch{Sender: accounts.Principal{Account: a, Device: 1}, Now: now, SharedContent: true}
	for _, to := range []struct {
		account uuid.UUID
		devices []int
	}{{b, []int{1, 2}}, {c, []int{1}}} {
		p := relay.Part{Destination: to.account}
		for _, d := range to.devices {
			p.Envelopes = append(p.Envelopes, relay.Envelope{ID: uuid.New(), Type: 7, SourceAccount: a, SourceDevice: 1, DestDevice: d,
				ClientTimestamp: 1, ServerTimestamp: now, ExpiresAt: now.Add(time.Hour), Content: content})
		}
		mb.Parts = append(mb.Parts, p)
	}
	if _, err := db.EnqueueMulti(ctx, mb, acceptAll); err != nil {
		t.Fatal(err)
	}
	count := func(table string) int {
		t.Helper()
		rows, err := db.DumpTable(ctx, table)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	if n := count("envelope_contents"); n != 1 {
		t.Fatalf("%d shared content rows, want 1", n)
	}
	rows, _ := db.DumpTable(ctx, "envelopes")
	for _, r := range rows {
		if r["content"] != nil {
			t.Errorf("an envelope of the shared send holds its own copy")
		}
	}
	var seen []relay.Envelope
	for _, q := range []struct {
		account uuid.UUID
		device  int
	}{{b, 1}, {b, 2}, {c, 1}} {
		got := pending(t, db, q.account, q.device)
		if len(got) != 1 || !bytes.Equal(got[0].Content, content) {
			t.Fatalf("device %d of %s: %d envelopes", q.device, q.account, len(got))
		}
		seen = append(seen, got[0])
	}
	// Acknowledged by two devices: still needed by the third.
	if err := db.Delete(ctx, append(acks(b, 1, seen[0].Seq), acks(b, 2, seen[1].Seq)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PurgeExpired(ctx, now, 100); err != nil {
		t.Fatal(err)
	}
	if n := count("envelope_contents"); n != 1 {
		t.Fatalf("shared content gone while a device still waits for it (%d rows)", n)
	}
	if got := pending(t, db, c, 1); len(got) != 1 || !bytes.Equal(got[0].Content, content) {
		t.Fatal("the last recipient lost the shared content")
	}
	// The last recipient's account goes (its queue with it).
	if err := db.DeleteAccount(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PurgeExpired(ctx, now, 100); err != nil {
		t.Fatal(err)
	}
	if n := count("envelope_contents"); n != 0 {
		t.Errorf("%d shared content rows outlived every envelope", n)
	}
	// A single-recipient send keeps its ciphertext in its envelope.
	if _, err := db.Enqueue(ctx, batch(a, b, 1), accept); err != nil {
		t.Fatal(err)
	}
	if n := count("envelope_contents"); n != 0 {
		t.Errorf("a single send stored shared content")
	}
}
