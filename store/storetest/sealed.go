package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/store"
)

var sealedTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"SealedEnvelopesHaveNoSource", testSealedEnvelopes},
	{"UnidentifiedAccess", testUnidentifiedAccess},
}

// sealed is batch without a sender: a sealed-sender send.
func sealed(to uuid.UUID, devices ...int) relay.Batch {
	b := batch(uuid.Nil, to, devices...)
	b.Sender = accounts.Principal{}
	for i := range b.Envelopes {
		b.Envelopes[i].Type, b.Envelopes[i].SourceAccount, b.Envelopes[i].SourceDevice = 6, uuid.Nil, 0
	}
	return b
}

// Sealed envelopes are stored and delivered with no source, share one
// share of each queue, and free it when acknowledged.
func testSealedEnvelopes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	capped := func(bt relay.Batch) relay.Batch {
		bt.QueueMaxEnvelopes, bt.QueueMaxBytes = 10, 1<<20
		bt.QueueSenderMaxEnvelopes, bt.QueueSenderMaxBytes = 2, 1<<20
		return bt
	}
	for range 2 {
		if rc, err := db.Enqueue(ctx, capped(sealed(b, 1)), accept); err != nil || len(rc.Skipped) != 0 {
			t.Fatalf("sealed send: %+v, %v", rc, err)
		}
	}
	got := pending(t, db, b, 1)
	if len(got) != 2 {
		t.Fatalf("%d envelopes queued, want 2", len(got))
	}
	for _, e := range got {
		if e.SourceAccount != uuid.Nil || e.SourceDevice != 0 || e.Type != 6 {
			t.Errorf("sealed envelope stored with a source: %+v", e)
		}
	}
	// All sealed senders share one share: a third is refused, an
	// identified sender is not affected.
	var full *relay.QueueFullError
	if _, err := db.Enqueue(ctx, capped(sealed(b, 1)), accept); !errors.As(err, &full) {
		t.Errorf("past the sealed share: %v", err)
	}
	if rc, err := db.Enqueue(ctx, capped(batch(a, b, 1)), accept); err != nil || len(rc.Skipped) != 0 {
		t.Errorf("an identified sender beside sealed ones: %+v, %v", rc, err)
	}
	// Acknowledging a sealed envelope frees the sealed share.
	if err := db.Delete(ctx, acks(b, 1, got[0].Seq)); err != nil {
		t.Fatal(err)
	}
	if rc, err := db.Enqueue(ctx, capped(sealed(b, 1)), accept); err != nil || len(rc.Skipped) != 0 {
		t.Errorf("after an acknowledgement: %+v, %v", rc, err)
	}
	// Idempotency works without a sending device: a retry is answered as
	// the first attempt was, a different request with the key is refused.
	first := keyed(capped(sealed(b, 1)), "sealed-key", "r")
	db.Delete(ctx, acks(b, 1, pending(t, db, b, 1)[0].Seq))
	if rc, err := db.Enqueue(ctx, first, accept); err != nil || rc.Replayed {
		t.Fatalf("keyed sealed send: %+v %v", rc, err)
	}
	if rc, err := db.Enqueue(ctx, first, accept); err != nil || !rc.Replayed {
		t.Errorf("its retry: %+v %v", rc, err)
	}
	if _, err := db.Enqueue(ctx, keyed(capped(sealed(b, 1)), "sealed-key", "other"), accept); !errors.Is(err, relay.ErrIdempotencyKeyUsed) {
		t.Errorf("the key with another request: %v", err)
	}
	sources := 0
	for _, e := range pending(t, db, b, 1) {
		if e.SourceAccount == a {
			sources++
		}
	}
	if sources != 1 {
		t.Errorf("%d envelopes from the identified sender, want 1", sources)
	}
}

func testUnidentifiedAccess(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	b, _ := register(t, db, 0)
	got, err := db.UnidentifiedAccess(ctx, []uuid.UUID{a, b, uuid.New()})
	if err != nil || len(got) != 2 || got[a].Key != nil || got[a].Unrestricted {
		t.Fatalf("fresh accounts: %+v, %v", got, err)
	}
	key := random(accounts.UnidentifiedAccessKeySize)
	if err := db.SetUnidentifiedAccess(ctx, a, accounts.UnidentifiedAccess{Key: key}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetUnidentifiedAccess(ctx, b, accounts.UnidentifiedAccess{Unrestricted: true}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetUnidentifiedAccess(ctx, uuid.New(), accounts.UnidentifiedAccess{Key: key}); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("unknown account: %v", err)
	}
	got, err = db.UnidentifiedAccess(ctx, []uuid.UUID{a, b})
	if err != nil || !bytes.Equal(got[a].Key, key) || got[a].Unrestricted || got[b].Key != nil || !got[b].Unrestricted {
		t.Fatalf("after setting: %+v, %v", got, err)
	}
	// Many accounts at once (a large group send).
	ids := []uuid.UUID{a}
	for range 150 {
		ids = append(ids, uuid.New())
	}
	if got, err := db.UnidentifiedAccess(ctx, ids); err != nil || len(got) != 1 || !bytes.Equal(got[a].Key, key) {
		t.Errorf("150 unknown and one known: %d, %v", len(got), err)
	}
	// A key of the wrong size is refused by the schema.
	if err := db.SetUnidentifiedAccess(ctx, a, accounts.UnidentifiedAccess{Key: random(15)}); err == nil {
		t.Error("a 15-byte key was stored")
	}
}
