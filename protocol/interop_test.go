package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/libsignalpeer"
	"github.com/parleyhq/parley/protocol"
)

// The tests in this file hold conversations with Signal's official
// libsignal (npm @signalapp/libsignal-client, pinned by
// scripts/with-libsignal) in both directions. They skip without it unless
// PARLEY_LIBSIGNAL_REQUIRED=1, which make test sets.

// official is one client of the official library.
type official struct {
	peer   *libsignalpeer.Peer
	client string
	addr   protocol.Address
	keys   *libsignalpeer.KeyMaterial
}

func newOfficial(t *testing.T, peer *libsignalpeer.Peer, deviceID uint32) *official {
	t.Helper()
	name := uuid.NewString()
	o := &official{peer: peer, client: name, addr: protocol.Address{Name: name, DeviceID: deviceID}}
	if _, err := peer.NewClientWith(name, libsignalpeer.ClientOptions{AddressName: name, RegistrationID: 2000 + deviceID, DeviceID: deviceID}); err != nil {
		t.Fatal(err)
	}
	o.generate(t)
	return o
}

func (o *official) generate(t *testing.T) {
	t.Helper()
	keys, err := o.peer.GenerateKeys(o.client, 3)
	if err != nil {
		t.Fatal(err)
	}
	o.keys = keys
}

func la(a protocol.Address) libsignalpeer.Address {
	return libsignalpeer.Address{Name: a.Name, DeviceID: a.DeviceID}
}

// bundleFor converts the official client's keys into our bundle type.
func (o *official) bundle(t *testing.T, i, k int) *protocol.PreKeyBundle {
	t.Helper()
	b := o.keys.Bundle(i, k)
	out := &protocol.PreKeyBundle{RegistrationID: b.RegistrationID, DeviceID: o.addr.DeviceID,
		SignedPreKeyID: b.SignedPreKeyID, SignedPreKeySignature: b.SignedPreKeySignature,
		KyberPreKeyID: b.KyberPreKeyID, KyberPreKeySignature: b.KyberPreKeySignature}
	var err error
	if out.IdentityKey, err = protocol.ParsePublicKey(b.IdentityKey); err != nil {
		t.Fatal(err)
	}
	if out.SignedPreKey, err = protocol.ParsePublicKey(b.SignedPreKey); err != nil {
		t.Fatal(err)
	}
	if out.KyberPreKey, err = protocol.ParseKEMPublicKey(b.KyberPreKey); err != nil {
		t.Fatal(err)
	}
	if b.PreKey != nil {
		pk, err := protocol.ParsePublicKey(b.PreKey)
		if err != nil {
			t.Fatal(err)
		}
		out.PreKeyID, out.PreKey = b.PreKeyID, &pk
	}
	return out
}

// officialBundle converts a Go device's bundle for the official client.
func officialBundle(b *protocol.PreKeyBundle) libsignalpeer.Bundle {
	out := libsignalpeer.Bundle{RegistrationID: b.RegistrationID, DeviceID: b.DeviceID,
		IdentityKey: b.IdentityKey.Bytes(), SignedPreKeyID: b.SignedPreKeyID, SignedPreKey: b.SignedPreKey.Bytes(),
		SignedPreKeySignature: b.SignedPreKeySignature, KyberPreKeyID: b.KyberPreKeyID,
		KyberPreKey: b.KyberPreKey.Bytes(), KyberPreKeySignature: b.KyberPreKeySignature}
	if b.PreKey != nil {
		out.PreKeyID, out.PreKey = b.PreKeyID, b.PreKey.Bytes()
	}
	return out
}

func (o *official) encrypt(t *testing.T, to protocol.Address, text []byte) protocol.CiphertextMessage {
	t.Helper()
	typ, body, err := o.peer.Encrypt(o.client, la(to), text)
	if err != nil {
		t.Fatalf("official encrypt: %v", err)
	}
	return protocol.CiphertextMessage{Type: protocol.MessageType(typ), Bytes: body}
}

func (o *official) decrypt(from protocol.Address, m protocol.CiphertextMessage) ([]byte, error) {
	return o.peer.Decrypt(o.client, la(from), int(m.Type), m.Bytes)
}

// converse sends n rounds each way, checking every plaintext byte for byte.
func converse(t *testing.T, g *device, o *official, rounds int) {
	t.Helper()
	for r := range rounds {
		for j := range 1 + r%3 {
			text := fmt.Appendf(nil, "official→go round %d #%d %x", r, j, randomBytes(t, r*7%50))
			pt, err := g.decrypt(o.addr, o.encrypt(t, g.addr, text))
			if err != nil {
				t.Fatalf("round %d: go decrypt: %v", r, err)
			}
			if !bytes.Equal(pt, text) {
				t.Fatalf("round %d: go got %q, want %q", r, pt, text)
			}
		}
		for j := range 1 + (r+1)%3 {
			text := fmt.Appendf(nil, "go→official round %d #%d %x", r, j, randomBytes(t, r*11%70))
			pt, err := o.decrypt(g.addr, g.encrypt(t, o.addr, string(text)))
			if err != nil {
				t.Fatalf("round %d: official decrypt: %v", r, err)
			}
			if !bytes.Equal(pt, text) {
				t.Fatalf("round %d: official got %q, want %q", r, pt, text)
			}
		}
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestOfficialStartsSession(t *testing.T) {
	peer := libsignalpeer.Start(t)
	t.Logf("official libsignal %s", peer.Version())
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 2)
	if err := peer.ProcessBundle(o.client, la(g.addr), officialBundle(g.bundle(0, 0))); err != nil {
		t.Fatal(err)
	}
	first := o.encrypt(t, g.addr, []byte("hello from official"))
	if first.Type != protocol.TypePreKey || first.Bytes[0] != 0x44 {
		t.Fatalf("official's first message: type %d, version byte %#x", first.Type, first.Bytes[0])
	}
	pt, err := g.decrypt(o.addr, first)
	if err != nil {
		t.Fatalf("decrypt official's PreKey message: %v", err)
	}
	if string(pt) != "hello from official" {
		t.Fatalf("got %q", pt)
	}
	converse(t, g, o, 30)
}

func TestGoStartsSession(t *testing.T) {
	peer := libsignalpeer.Start(t)
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 3)
	if err := protocol.ProcessPreKeyBundle(context.Background(), rand.Reader, g.store, g.addr, o.addr, o.bundle(t, 0, 0), time.Now()); err != nil {
		t.Fatal(err)
	}
	first := g.encrypt(t, o.addr, "hello from go")
	if first.Type != protocol.TypePreKey {
		t.Fatalf("first message type %d", first.Type)
	}
	pt, err := o.decrypt(g.addr, first)
	if err != nil {
		t.Fatalf("official decrypt of our PreKey message: %v", err)
	}
	if string(pt) != "hello from go" {
		t.Fatalf("got %q", pt)
	}
	info, err := peer.SessionInfo(o.client, la(g.addr))
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != 4 || !info.PQRatchet {
		t.Fatalf("official's session: version %d, SPQR %v; want 4 with SPQR", info.Version, info.PQRatchet)
	}
	converse(t, g, o, 30)
}
