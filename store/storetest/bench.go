package storetest

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/store"
)

// Bench measures the relay's hot storage paths on one backend: device
// authentication lookups and bundle claims (each claim deletes one EC and
// one KEM one-time prekey in a transaction), run from parallel goroutines,
// and one send to a device whose queue is deep (9,000 envelopes from other
// senders and 1,000, a full default share, from this one) next to the same
// send to an empty queue: measuring the queue and the sender's share of it
// must cost the same at any depth.
func Bench(b *testing.B, db *store.DB) {
	ctx := context.Background()
	reg := func() uuid.UUID {
		number := phone.Hash{}
		copy(number[:], random(32))
		var id [32]byte
		copy(id[:], random(32))
		if err := db.CreateSession(ctx, sessionFor(id, number)); err != nil {
			b.Fatal(err)
		}
		if err := db.MarkVerified(ctx, id, 0, now); err != nil {
			b.Fatal(err)
		}
		a, err := db.Register(ctx, accounts.StoredRegistration{
			Session: id, Number: number, IdentityKey: ecKey(), Day: today(),
			Device: accounts.NewDevice{RegistrationID: 1, Credential: random(accounts.HashedSize),
				SignedPreKey: keys.SignedPreKey{ID: 1, PublicKey: ecKey(), Signature: sig()}, LastResort: kemKey(1)},
		}, now)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	b.Run("DeviceCredential", func(b *testing.B) {
		a := reg()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := db.DeviceCredential(ctx, a, 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("ClaimBundle", func(b *testing.B) {
		a := reg()
		// Pools hold at most keys.MaxPoolSize keys, so past the first
		// 1000 iterations claims fall back to the signed and last-resort keys.
		for from := 1; from <= keys.MaxPoolSize; from += keys.MaxPreKeysPerUpload {
			if err := db.StoreKeys(ctx, a, 1, keys.Upload{PreKeys: preKeys(from, keys.MaxPreKeysPerUpload), KEMPreKeys: kemPreKeys(from, keys.MaxPreKeysPerUpload)}); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := db.ClaimBundle(ctx, a, 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	// The same send to an empty queue: with the counters on the device
	// row the two cost the same (the queue grows by b.N meanwhile).
	b.Run("EnqueueFromEmptyQueue", func(b *testing.B) {
		to, from := reg(), reg()
		b.ResetTimer()
		for range b.N {
			if _, err := db.Enqueue(ctx, batch(from, to, 1), func([]accounts.Device) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EnqueueAtDepth10000", func(b *testing.B) {
		to, from, other := reg(), reg(), reg()
		fill := func(sender uuid.UUID, n int) {
			for range n / 100 {
				bt := batch(sender, to)
				for range 100 {
					bt.Envelopes = append(bt.Envelopes, batch(sender, to, 1).Envelopes[0])
				}
				mb := relay.MultiBatch{Sender: bt.Sender, Now: now, Parts: []relay.Part{{Destination: to, Envelopes: bt.Envelopes}}}
				if _, err := db.EnqueueMulti(ctx, mb, func(map[uuid.UUID][]accounts.Device) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		}
		fill(other, 9_000)
		fill(from, 1_000)
		b.ResetTimer()
		for range b.N {
			if _, err := db.Enqueue(ctx, batch(from, to, 1), func([]accounts.Device) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}
