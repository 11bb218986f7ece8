package protocol_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// BenchmarkSession: PQXDH session setup (bundle processed, first message
// decrypted by the responder).
func BenchmarkSession(b *testing.B) {
	ctx := context.Background()
	alice, bob := newDevice(b, 1), newDevice(b, 2)
	for b.Loop() {
		if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, alice.store, alice.addr, bob.addr, bob.bundle(-1, -1), time.Now()); err != nil {
			b.Fatal(err)
		}
		m := alice.encrypt(b, bob.addr, "hello")
		if err := bob.store.StoreSession(ctx, alice.addr, protocol.NewSessionRecord()); err != nil {
			b.Fatal(err)
		}
		if _, err := bob.decrypt(alice.addr, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessage: one 1 KiB message encrypted and decrypted on an
// established session, alternating direction (Double Ratchet steps and the
// post-quantum ratchet's chunks every message), records stored each time.
func BenchmarkMessage(b *testing.B) {
	ctx := context.Background()
	alice, bob := newDevice(b, 1), newDevice(b, 2)
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, alice.store, alice.addr, bob.addr, bob.bundle(0, 0), time.Now()); err != nil {
		b.Fatal(err)
	}
	text := string(make([]byte, 1024))
	from, to := alice, bob
	for b.Loop() {
		if _, err := to.decrypt(from.addr, from.encrypt(b, to.addr, text)); err != nil {
			b.Fatal(err)
		}
		from, to = to, from
	}
}
