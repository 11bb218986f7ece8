package protocol_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/protocol"
)

// device is one Go device with its store and published keys.
type device struct {
	addr       protocol.Address
	store      *protocol.MemoryStore
	identity   protocol.IdentityKeyPair
	regID      uint32
	signed     protocol.SignedPreKeyRecord
	lastResort protocol.KyberPreKeyRecord
	preKeys    []protocol.PreKeyRecord
	kyberKeys  []protocol.KyberPreKeyRecord
}

func newDevice(t testing.TB, deviceID uint32) *device {
	t.Helper()
	id, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newDeviceWith(t, uuid.NewString(), deviceID, id)
}

func newDeviceWith(t testing.TB, name string, deviceID uint32, id protocol.IdentityKeyPair) *device {
	t.Helper()
	now := time.Now()
	d := &device{addr: protocol.Address{Name: name, DeviceID: deviceID}, identity: id, regID: 1000 + deviceID}
	d.store = protocol.NewMemoryStore(id, d.regID)
	var err error
	if d.signed, err = protocol.GenerateSignedPreKey(rand.Reader, id, 1, now); err != nil {
		t.Fatal(err)
	}
	d.store.AddSignedPreKey(d.signed)
	if d.lastResort, err = protocol.GenerateKyberPreKey(rand.Reader, id, 100, now); err != nil {
		t.Fatal(err)
	}
	d.store.AddKyberPreKey(d.lastResort, true)
	for i := uint32(1); i <= 3; i++ {
		pk, err := protocol.GeneratePreKey(rand.Reader, i)
		if err != nil {
			t.Fatal(err)
		}
		d.preKeys = append(d.preKeys, pk)
		d.store.AddPreKey(pk)
		kk, err := protocol.GenerateKyberPreKey(rand.Reader, id, i, now)
		if err != nil {
			t.Fatal(err)
		}
		d.kyberKeys = append(d.kyberKeys, kk)
		d.store.AddKyberPreKey(kk, false)
	}
	return d
}

// bundle is d's bundle with one-time keys i (or none, -1) and Kyber key k
// (or the last-resort key, -1).
func (d *device) bundle(i, k int) *protocol.PreKeyBundle {
	b := &protocol.PreKeyBundle{
		RegistrationID: d.regID, DeviceID: d.addr.DeviceID, IdentityKey: d.identity.Public,
		SignedPreKeyID: d.signed.ID, SignedPreKey: d.signed.KeyPair.Public, SignedPreKeySignature: d.signed.Signature,
	}
	if i >= 0 {
		pub := d.preKeys[i].KeyPair.Public
		b.PreKeyID, b.PreKey = d.preKeys[i].ID, &pub
	}
	kk := d.lastResort
	if k >= 0 {
		kk = d.kyberKeys[k]
	}
	b.KyberPreKeyID, b.KyberPreKey, b.KyberPreKeySignature = kk.ID, kk.KeyPair.Public, kk.Signature
	return b
}

func (d *device) encrypt(t testing.TB, to protocol.Address, text string) protocol.CiphertextMessage {
	t.Helper()
	m, err := protocol.Encrypt(context.Background(), rand.Reader, d.store, d.addr, to, []byte(text), time.Now())
	if err != nil {
		t.Fatalf("%s encrypt: %v", d.addr, err)
	}
	return m
}

func (d *device) decrypt(from protocol.Address, m protocol.CiphertextMessage) ([]byte, error) {
	return protocol.Decrypt(context.Background(), rand.Reader, d.store, d.addr, from, m.Type, m.Bytes)
}

func TestGoConversation(t *testing.T) {
	ctx := context.Background()
	alice, bob := newDevice(t, 1), newDevice(t, 2)
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, alice.store, alice.addr, bob.addr, bob.bundle(0, 0), time.Now()); err != nil {
		t.Fatal(err)
	}
	var pending []protocol.CiphertextMessage
	for i := range 3 {
		m := alice.encrypt(t, bob.addr, "first "+string(rune('a'+i)))
		if m.Type != protocol.TypePreKey {
			t.Fatalf("message %d before any answer has type %d, want PreKey", i, m.Type)
		}
		pending = append(pending, m)
	}
	// Delivered out of order: the last first.
	for _, i := range []int{2, 0, 1} {
		pt, err := bob.decrypt(alice.addr, pending[i])
		if err != nil {
			t.Fatalf("bob decrypt %d: %v", i, err)
		}
		if want := "first " + string(rune('a'+i)); string(pt) != want {
			t.Fatalf("got %q, want %q", pt, want)
		}
	}
	if _, err := bob.decrypt(alice.addr, pending[1]); err == nil {
		t.Fatal("a duplicate decrypted twice")
	}
	// Many turns, so the post-quantum ratchet completes epochs.
	for turn := range 40 {
		from, to := bob, alice
		if turn%2 == 1 {
			from, to = alice, bob
		}
		for j := range 1 + turn%3 {
			text := "turn " + string(rune('A'+turn%26)) + string(rune('0'+j))
			m := from.encrypt(t, to.addr, text)
			if turn > 0 && m.Type != protocol.TypeSignal {
				t.Fatalf("turn %d: type %d after the session was answered", turn, m.Type)
			}
			pt, err := to.decrypt(from.addr, m)
			if err != nil {
				t.Fatalf("turn %d: %v", turn, err)
			}
			if string(pt) != text {
				t.Fatalf("turn %d: got %q, want %q", turn, pt, text)
			}
		}
	}
}

// TestLastResortReplay: a PreKey message built on the last-resort Kyber key
// (which is not deleted after use) is refused the second time, even after
// the session it created is gone: the store remembers the signed prekey and
// base key it was used with.
func TestLastResortReplay(t *testing.T) {
	ctx := context.Background()
	alice, bob := newDevice(t, 1), newDevice(t, 2)
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, alice.store, alice.addr, bob.addr, bob.bundle(-1, -1), time.Now()); err != nil {
		t.Fatal(err)
	}
	m := alice.encrypt(t, bob.addr, "once")
	if _, err := bob.decrypt(alice.addr, m); err != nil {
		t.Fatal(err)
	}
	if err := bob.store.StoreSession(ctx, alice.addr, protocol.NewSessionRecord()); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.decrypt(alice.addr, m); !errors.Is(err, protocol.ErrPreKeyReused) {
		t.Fatalf("replayed PreKey message: err = %v, want ErrPreKeyReused", err)
	}
	if rec, _ := bob.store.LoadSession(ctx, alice.addr); rec.HasCurrentSession(time.Now()) {
		t.Fatal("the refused replay left a session behind")
	}
}
