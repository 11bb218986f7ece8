package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"

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

// ---- more interop cases: delivery order, key exhaustion, reinstalls,
// simultaneous starts, long runs and groups.

// endpoint is one side of a conversation: a Go device or an official client.
type endpoint interface {
	address() protocol.Address
	send(t *testing.T, to protocol.Address, text []byte) protocol.CiphertextMessage
	receive(from protocol.Address, m protocol.CiphertextMessage) ([]byte, error)
	isDuplicate(err error) bool
	String() string
}

func (d *device) address() protocol.Address { return d.addr }
func (d *device) send(t *testing.T, to protocol.Address, text []byte) protocol.CiphertextMessage {
	t.Helper()
	return d.encrypt(t, to, string(text))
}
func (d *device) receive(from protocol.Address, m protocol.CiphertextMessage) ([]byte, error) {
	return d.decrypt(from, m)
}
func (d *device) isDuplicate(err error) bool { return errors.Is(err, protocol.ErrDuplicateMessage) }
func (d *device) String() string             { return "go " + d.addr.String() }

func (o *official) address() protocol.Address { return o.addr }
func (o *official) send(t *testing.T, to protocol.Address, text []byte) protocol.CiphertextMessage {
	t.Helper()
	return o.encrypt(t, to, text)
}
func (o *official) receive(from protocol.Address, m protocol.CiphertextMessage) ([]byte, error) {
	return o.decrypt(from, m)
}
func (o *official) isDuplicate(err error) bool {
	return libsignalpeer.HasCode(err, "DuplicatedMessage")
}
func (o *official) String() string { return "official " + o.addr.String() }

// deliver has to decrypt m from from and checks the plaintext byte for byte.
func deliver(t *testing.T, from, to endpoint, m protocol.CiphertextMessage, want []byte) {
	t.Helper()
	got, err := to.receive(from.address(), m)
	if err != nil {
		t.Fatalf("%s decrypting %q from %s (type %d): %v", to, want, from, m.Type, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s got %q from %s, want %q", to, got, from, want)
	}
}

// sent is a message in flight with the plaintext it carries.
type sent struct {
	text []byte
	msg  protocol.CiphertextMessage
}

func sendBatch(t *testing.T, from, to endpoint, n int, label string) []sent {
	t.Helper()
	out := make([]sent, n)
	for i := range out {
		out[i].text = fmt.Appendf(nil, "%s %d from %s %x", label, i, from, randomBytes(t, i*13%40))
		out[i].msg = from.send(t, to.address(), out[i].text)
	}
	return out
}

// exchange sends one message each way, from a first.
func exchange(t *testing.T, a, b endpoint, label string) {
	t.Helper()
	for _, p := range [][2]endpoint{{a, b}, {b, a}} {
		text := fmt.Appendf(nil, "%s from %s", label, p[0])
		deliver(t, p[0], p[1], p[0].send(t, p[1].address(), text), text)
	}
}

// shuffler returns a seeded random source, logging its seed.
func shuffler(t *testing.T) *mrand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("shuffle seed %d", seed)
	return mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func sessionBytes(t *testing.T, d *device, with protocol.Address) []byte {
	t.Helper()
	r, err := d.store.LoadSession(context.Background(), with)
	if err != nil {
		t.Fatalf("load session: %v", err)
	}
	if r == nil {
		return nil
	}
	return r.Bytes()
}

func goStarts(t *testing.T, g *device, o *official, preKey, kyber int) {
	t.Helper()
	if err := protocol.ProcessPreKeyBundle(context.Background(), rand.Reader, g.store, g.addr, o.addr, o.bundle(t, preKey, kyber), time.Now()); err != nil {
		t.Fatalf("process official's bundle: %v", err)
	}
}

func officialStarts(t *testing.T, o *official, g *device, preKey, kyber int) {
	t.Helper()
	if err := o.peer.ProcessBundle(o.client, la(g.addr), officialBundle(g.bundle(preKey, kyber))); err != nil {
		t.Fatalf("official process our bundle: %v", err)
	}
}

// TestInteropOutOfOrderAndDuplicates delivers PreKey messages and
// messages spanning two chains in shuffled order, both ways, then
// duplicates: the receiver refuses them as duplicates, changes nothing,
// and the conversation goes on.
func TestInteropOutOfOrderAndDuplicates(t *testing.T) {
	peer := libsignalpeer.Start(t)
	for _, goFirst := range []bool{false, true} {
		name := "official starts"
		if goFirst {
			name = "go starts"
		}
		t.Run(name, func(t *testing.T) {
			g := newDevice(t, 1)
			o := newOfficial(t, peer, 2)
			var initiator, responder endpoint = o, g
			if goFirst {
				goStarts(t, g, o, 0, 0)
				initiator, responder = g, o
			} else {
				officialStarts(t, o, g, 0, 0)
			}
			rnd := shuffler(t)

			// Several PreKey messages, shuffled, then one again.
			first := sendBatch(t, initiator, responder, 4, "prekey")
			for _, m := range first {
				if m.msg.Type != protocol.TypePreKey {
					t.Fatalf("unanswered message of type %d", m.msg.Type)
				}
			}
			for _, i := range rnd.Perm(len(first)) {
				deliver(t, initiator, responder, first[i].msg, first[i].text)
			}
			checkDuplicate(t, initiator, responder, first[rnd.IntN(len(first))].msg)

			exchange(t, responder, initiator, "answer")
			for _, dir := range [][2]endpoint{{o, g}, {g, o}} {
				from, to := dir[0], dir[1]
				// A batch on one chain, of which only the last arrives, an
				// answer (a ratchet step), a batch on the next chain, and
				// then all the rest in random order.
				a := sendBatch(t, from, to, 6, "chain A")
				deliver(t, from, to, a[5].msg, a[5].text)
				text := []byte("answer to chain A")
				deliver(t, to, from, to.send(t, from.address(), text), text)
				b := sendBatch(t, from, to, 6, "chain B")
				rest := append(a[:5:5], b...)
				for _, i := range rnd.Perm(len(rest)) {
					deliver(t, from, to, rest[i].msg, rest[i].text)
				}
				checkDuplicate(t, from, to, a[2].msg)
				checkDuplicate(t, from, to, b[4].msg)
				checkDuplicate(t, from, to, a[5].msg)
				exchange(t, from, to, "after duplicates")
				// Still a duplicate one ratchet step later.
				checkDuplicate(t, from, to, b[0].msg)
			}
			converse(t, g, o, 4)
			// Long after (more ratchet steps than the five receiving
			// chains a session keeps), a first PreKey message again: its
			// chain is gone, so neither side can tell it is a duplicate,
			// but both refuse it as invalid and change nothing.
			late := first[0].msg
			var before []byte
			if gr, ok := responder.(*device); ok {
				before = sessionBytes(t, gr, initiator.address())
			}
			_, err := responder.receive(initiator.address(), late)
			t.Logf("%s, PreKey message replayed after its chain was dropped: %v", responder, err)
			if goFirst {
				// libsignal's InvalidMessage, a Generic error in 0.103's Node API.
				if !officialError(err, "Generic", "decryption failed") {
					t.Fatalf("official: replayed old PreKey message: %v, want invalid message", err)
				}
			} else {
				if !errors.Is(err, protocol.ErrInvalidMessage) {
					t.Fatalf("go: replayed old PreKey message: %v, want ErrInvalidMessage", err)
				}
				if !bytes.Equal(before, sessionBytes(t, g, o.addr)) {
					t.Fatal("refusing the replayed PreKey message changed the stored session")
				}
			}
			converse(t, g, o, 2)
		})
	}
}

// checkDuplicate delivers m, which to has decrypted before: it must be
// refused as a duplicate (and for Go, the session must not change).
func checkDuplicate(t *testing.T, from, to endpoint, m protocol.CiphertextMessage) {
	t.Helper()
	var before []byte
	g, isGo := to.(*device)
	if isGo {
		before = sessionBytes(t, g, from.address())
	}
	pt, err := to.receive(from.address(), m)
	if err == nil {
		t.Fatalf("%s decrypted a duplicate (type %d) from %s: %q", to, m.Type, from, pt)
	}
	if !to.isDuplicate(err) {
		t.Fatalf("%s: duplicate (type %d) from %s refused with %v, want a duplicate-message error", to, m.Type, from, err)
	}
	if isGo && !bytes.Equal(before, sessionBytes(t, g, from.address())) {
		t.Fatal("refusing a duplicate changed the stored session")
	}
}

// TestInteropPreKeysUsedUp starts sessions from bundles whose one-time keys
// ran out (no EC prekey, the last-resort Kyber key) and the mixed cases,
// both ways: one-time keys are consumed, the last-resort key stays and
// serves a second initiator too.
func TestInteropPreKeysUsedUp(t *testing.T) {
	peer := libsignalpeer.Start(t)
	cases := []struct {
		name          string
		preKey, kyber int
	}{
		{"no one-time keys", -1, -1},
		{"EC prekey, last-resort Kyber", 0, -1},
		{"no EC prekey, one-time Kyber", -1, 0},
	}
	for _, c := range cases {
		t.Run("go starts/"+c.name, func(t *testing.T) {
			o := newOfficial(t, peer, 2)
			lastResort := o.keys.LastResortKyberPreKey.ID
			wantKyber := lastResort
			if c.kyber >= 0 {
				wantKyber = o.keys.KyberPreKeys[c.kyber].ID
			}
			starters := []*device{newDevice(t, 1), newDevice(t, 3)}
			for n, g := range starters {
				if n == 1 && (c.preKey >= 0 || c.kyber >= 0) {
					break // one-time keys serve one session only
				}
				goStarts(t, g, o, c.preKey, c.kyber)
				m := g.encrypt(t, o.addr, "first from "+g.addr.String())
				pk, err := protocol.ParsePreKeySignalMessage(m.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if (pk.PreKeyID != nil) != (c.preKey >= 0) || pk.KyberPreKeyID != wantKyber {
					t.Fatalf("our PreKey message names prekey %v, Kyber key %d; want one-time EC prekey %v, Kyber %d",
						pk.PreKeyID, pk.KyberPreKeyID, c.preKey >= 0, wantKyber)
				}
				deliver(t, g, o, m, []byte("first from "+g.addr.String()))
				converse(t, g, o, 3)
			}
			st, err := peer.KeyState(o.client)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(st.LastResortKyberPreKeyIDs, lastResort) {
				t.Fatalf("official lost its last-resort Kyber key %d: %+v", lastResort, st)
			}
			wantEC, wantK := 3, 3
			if c.preKey >= 0 {
				wantEC--
			}
			if c.kyber >= 0 {
				wantK--
			}
			if len(st.PreKeyIDs) != wantEC || len(st.KyberPreKeyIDs) != wantK {
				t.Fatalf("official's keys after the sessions: %+v; want %d EC and %d Kyber one-time keys left", st, wantEC, wantK)
			}
			for _, id := range st.KyberUsed {
				if id != wantKyber {
					t.Fatalf("official marked Kyber keys %v used, want only %d", st.KyberUsed, wantKyber)
				}
			}
		})
		t.Run("official starts/"+c.name, func(t *testing.T) {
			g := newDevice(t, 1)
			ctx := context.Background()
			starters := []*official{newOfficial(t, peer, 2), newOfficial(t, peer, 4)}
			for n, o := range starters {
				if n == 1 && (c.preKey >= 0 || c.kyber >= 0) {
					break
				}
				officialStarts(t, o, g, c.preKey, c.kyber)
				text := []byte("first from " + o.addr.String())
				m := o.encrypt(t, g.addr, text)
				pk, err := protocol.ParsePreKeySignalMessage(m.Bytes)
				if err != nil {
					t.Fatalf("parse official's PreKey message: %v", err)
				}
				if (pk.PreKeyID != nil) != (c.preKey >= 0) {
					t.Fatalf("official's PreKey message names one-time prekey %v", pk.PreKeyID)
				}
				deliver(t, o, g, m, text)
				converse(t, g, o, 3)
			}
			if _, err := g.store.LoadKyberPreKey(ctx, g.lastResort.ID); err != nil {
				t.Fatalf("our last-resort Kyber key is gone: %v", err)
			}
			for i, k := range g.preKeys {
				_, err := g.store.LoadPreKey(ctx, k.ID)
				if used := i == c.preKey; used != (err != nil) {
					t.Fatalf("one-time EC prekey %d (used %v): %v", k.ID, used, err)
				}
			}
			for i, k := range g.kyberKeys {
				_, err := g.store.LoadKyberPreKey(ctx, k.ID)
				if used := i == c.kyber; used != (err != nil) {
					t.Fatalf("one-time Kyber prekey %d (used %v): %v", k.ID, used, err)
				}
			}
		})
	}
}

// TestInteropReinstall has each side reinstall (new identity, empty
// stores): messages of the old session fail cleanly at the reinstalled
// side, the other side refuses the changed identity until it accepts it,
// then a new session works both ways; a late message of the old session
// at the side that did not reinstall is refused, its identity no longer
// being trusted.
func TestInteropReinstall(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()

	t.Run("official reinstalls", func(t *testing.T) {
		g := newDevice(t, 1)
		o := newOfficial(t, peer, 2)
		oldKey := o.keys.IdentityKey
		officialStarts(t, o, g, 0, 0)
		exchange(t, o, g, "before")
		converse(t, g, o, 2)
		late := sendBatch(t, o, g, 1, "late, old session")[0]
		inFlight := sendBatch(t, g, o, 1, "in flight")[0]

		newKey, err := peer.Reinstall(o.client)
		if err != nil {
			t.Fatal(err)
		}
		o.generate(t)
		for _, m := range []sent{inFlight, sendBatch(t, g, o, 1, "still on the old session")[0]} {
			_, err := o.decrypt(g.addr, m.msg)
			if err == nil {
				t.Fatal("reinstalled official decrypted a message of the old session")
			}
			t.Logf("reinstalled official, old-session message: %v", err)
			// 0.103 reports SessionNotFound as a Generic error.
			if !officialError(err, "Generic", "not found") {
				t.Fatalf("reinstalled official refused an old-session message with %v, want session not found", err)
			}
		}
		if info, _ := peer.SessionInfo(o.client, la(g.addr)); info.Exists {
			t.Fatalf("reinstalled official made a session from an old message: %+v", info)
		}

		// We refuse the new identity, in a bundle and in a PreKey message.
		newID, err := protocol.ParsePublicKey(newKey)
		if err != nil {
			t.Fatal(err)
		}
		before := sessionBytes(t, g, o.addr)
		err = protocol.ProcessPreKeyBundle(ctx, rand.Reader, g.store, g.addr, o.addr, o.bundle(t, 0, 0), time.Now())
		wantUntrusted(t, err, o.addr, newID)
		officialStarts(t, o, g, 1, 1)
		text := []byte("hello again, new identity")
		m := o.encrypt(t, g.addr, text)
		_, err = g.decrypt(o.addr, m)
		wantUntrusted(t, err, o.addr, newID)
		if !bytes.Equal(before, sessionBytes(t, g, o.addr)) {
			t.Fatal("refusing the changed identity changed the stored session")
		}
		if _, err := g.store.LoadPreKey(ctx, g.preKeys[1].ID); err != nil {
			t.Fatalf("refusing the changed identity consumed our prekey: %v", err)
		}
		if old, _ := protocol.ParsePublicKey(oldKey); !bytes.Equal(identityOf(t, g, o.addr), old.Bytes()) {
			t.Fatal("our session no longer names the old identity")
		}

		g.store.Trust(o.addr.Name, newID)
		deliver(t, o, g, m, text)
		if !bytes.Equal(identityOf(t, g, o.addr), newKey) {
			t.Fatal("our current session does not name the new identity")
		}
		converse(t, g, o, 3)

		// The old session's late message: decryptable by the archived
		// state, but its identity is not trusted any more.
		before = sessionBytes(t, g, o.addr)
		_, err = g.decrypt(o.addr, late.msg)
		old, _ := protocol.ParsePublicKey(oldKey)
		wantUntrusted(t, err, o.addr, old)
		if !bytes.Equal(before, sessionBytes(t, g, o.addr)) {
			t.Fatal("refusing the late message changed the stored session")
		}
		converse(t, g, o, 2)
	})

	t.Run("go reinstalls", func(t *testing.T) {
		g := newDevice(t, 1)
		o := newOfficial(t, peer, 2)
		if err := peer.SetTrust(o.client, libsignalpeer.TrustTOFU); err != nil {
			t.Fatal(err)
		}
		goStarts(t, g, o, 0, 0)
		exchange(t, g, o, "before")
		converse(t, g, o, 2)
		late := sendBatch(t, g, o, 1, "late, old session")[0]
		inFlight := sendBatch(t, o, g, 1, "in flight")[0]

		// The same address with a new identity and empty stores.
		id, err := protocol.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		g = newDeviceWith(t, g.addr.Name, g.addr.DeviceID, id)
		for _, m := range []sent{inFlight, sendBatch(t, o, g, 1, "still on the old session")[0]} {
			_, err := g.decrypt(o.addr, m.msg)
			if !errors.Is(err, protocol.ErrNoSession) {
				t.Fatalf("reinstalled go device, old-session message: %v, want ErrNoSession", err)
			}
			if b := sessionBytes(t, g, o.addr); b != nil {
				t.Fatal("reinstalled go device stored a session from an old message")
			}
		}

		// Official (trust on first use) refuses the new identity.
		err = peer.ProcessBundle(o.client, la(g.addr), officialBundle(g.bundle(0, 0)))
		if !libsignalpeer.HasCode(err, "UntrustedIdentity") {
			t.Fatalf("official processing our bundle with a new identity: %v, want UntrustedIdentity", err)
		}
		goStarts(t, g, o, 1, 1)
		text := []byte("hello again, new identity")
		m := g.encrypt(t, o.addr, string(text))
		if _, err := o.decrypt(g.addr, m); !libsignalpeer.HasCode(err, "UntrustedIdentity") {
			t.Fatalf("official decrypting a PreKey message with our new identity: %v, want UntrustedIdentity", err)
		}
		st, err := peer.KeyState(o.client)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(st.PreKeyIDs, o.keys.PreKeys[1].ID) {
			t.Fatalf("official consumed its prekey for a refused message: %+v", st)
		}
		changed, err := peer.SaveIdentity(o.client, la(g.addr), id.Public.Bytes())
		if err != nil || !changed {
			t.Fatalf("official SaveIdentity: changed %v, %v", changed, err)
		}
		deliver(t, g, o, m, text)
		info, err := peer.SessionInfo(o.client, la(g.addr))
		if err != nil {
			t.Fatal(err)
		}
		if info.RemoteRegistrationID != g.regID || info.PreviousSessions != 1 || !info.PQRatchet {
			t.Fatalf("official's session with the reinstalled device: %+v", info)
		}
		converse(t, g, o, 3)

		_, err = o.decrypt(g.addr, late.msg)
		if !libsignalpeer.HasCode(err, "UntrustedIdentity") {
			t.Fatalf("official, late message of the session with our old identity: %v, want UntrustedIdentity", err)
		}
		converse(t, g, o, 2)
	})
}

// officialError tells whether err is official's error with the code name and
// a message containing text.
func officialError(err error, codeName, text string) bool {
	var e *libsignalpeer.Error
	return errors.As(err, &e) && e.CodeName == codeName && strings.Contains(e.Message, text)
}

func wantUntrusted(t *testing.T, err error, addr protocol.Address, key protocol.PublicKey) {
	t.Helper()
	var ue *protocol.UntrustedIdentityError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want *protocol.UntrustedIdentityError", err)
	}
	if ue.Address != addr || !ue.Key.Equal(key) {
		t.Fatalf("untrusted identity error names %s %s, want %s %s", ue.Address, ue.Key, addr, key)
	}
}

// identityOf is the remote identity our current session with addr names.
func identityOf(t *testing.T, d *device, addr protocol.Address) []byte {
	t.Helper()
	r, err := d.store.LoadSession(context.Background(), addr)
	if err != nil || r == nil {
		t.Fatalf("load session: %v, %v", r, err)
	}
	k, ok := r.RemoteIdentity()
	if !ok {
		t.Fatal("no current session")
	}
	return k.Bytes()
}

// TestInteropSimultaneousInitiation has both sides process each other's
// bundle and send PreKey messages before either arrives. Each side then
// holds two sessions (one archived); messages on either are decrypted (a
// message on the archived one promotes it) and the sides converge.
func TestInteropSimultaneousInitiation(t *testing.T) {
	peer := libsignalpeer.Start(t)
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 2)
	goStarts(t, g, o, 0, 0)
	officialStarts(t, o, g, 0, 0)
	fromGo := sendBatch(t, g, o, 3, "simultaneous prekey")
	fromOfficial := sendBatch(t, o, g, 3, "simultaneous prekey")
	for i := range 3 {
		if fromGo[i].msg.Type != protocol.TypePreKey || fromOfficial[i].msg.Type != protocol.TypePreKey {
			t.Fatalf("message %d: types %d and %d, want PreKey", i, fromGo[i].msg.Type, fromOfficial[i].msg.Type)
		}
	}
	// Both receive the other's first two; the third arrives late.
	for i := range 2 {
		deliver(t, g, o, fromGo[i].msg, fromGo[i].text)
		deliver(t, o, g, fromOfficial[i].msg, fromOfficial[i].text)
	}
	info, err := peer.SessionInfo(o.client, la(g.addr))
	if err != nil {
		t.Fatal(err)
	}
	if info.PreviousSessions != 1 || !info.HasCurrentState {
		t.Fatalf("official after both PreKey messages: %+v, want one archived session", info)
	}
	if n := archivedStates(sessionBytes(t, g, o.addr)); n != 1 {
		t.Fatalf("our record after both PreKey messages has %d archived sessions, want 1", n)
	}
	// Crossing messages again: each arrives on the receiver's archived
	// session.
	for round := range 3 {
		a := sendBatch(t, g, o, 2, fmt.Sprintf("crossing %d", round))
		b := sendBatch(t, o, g, 2, fmt.Sprintf("crossing %d", round))
		for i := range 2 {
			if a[i].msg.Type != protocol.TypeSignal || b[i].msg.Type != protocol.TypeSignal {
				t.Fatalf("round %d: types %d and %d after a PreKey message was received, want Signal", round, a[i].msg.Type, b[i].msg.Type)
			}
		}
		for i := range 2 {
			deliver(t, g, o, a[i].msg, a[i].text)
			deliver(t, o, g, b[i].msg, b[i].text)
		}
	}
	converse(t, g, o, 3)
	// The late PreKey messages still decrypt (their session is found by
	// base key and promoted), and the conversation goes on.
	deliver(t, g, o, fromGo[2].msg, fromGo[2].text)
	deliver(t, o, g, fromOfficial[2].msg, fromOfficial[2].text)
	converse(t, g, o, 3)
	checkDuplicate(t, g, o, fromGo[0].msg)
	checkDuplicate(t, o, g, fromOfficial[1].msg)
	converse(t, g, o, 2)
	info, err = peer.SessionInfo(o.client, la(g.addr))
	if err != nil {
		t.Fatal(err)
	}
	if n := archivedStates(sessionBytes(t, g, o.addr)); n != 1 || info.PreviousSessions != 1 {
		t.Fatalf("archived sessions at the end: ours %d, official's %d; want 1 each", n, info.PreviousSessions)
	}
}

// archivedStates counts the previous sessions in a serialized record
// (RecordStructure.previous_sessions, field 2).
func archivedStates(record []byte) int {
	n := 0
	for len(record) > 0 {
		num, typ, l := protowire.ConsumeTag(record)
		if l < 0 {
			return -1
		}
		l2 := protowire.ConsumeFieldValue(num, typ, record[l:])
		if l2 < 0 {
			return -1
		}
		if num == 2 && typ == protowire.BytesType {
			n++
		}
		record = record[l+l2:]
	}
	return n
}

// TestInteropLongOneSidedRun sends runs of 120 messages one way with no
// answer, alternating directions, then alternates message by message, so
// that the post-quantum ratchet's chunked messages complete epochs in both
// directions. Three messages of each run arrive four runs late, after
// their SPQR epoch is over. The SPQR epoch is
// read from each message's pq_ratchet field (its wire format: version
// byte 1, then the epoch as a varint) and from our stored session (the
// crate's PqRatchetState layout: chain, field 2, current_epoch).
func TestInteropLongOneSidedRun(t *testing.T) {
	peer := libsignalpeer.Start(t)
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 2)
	goStarts(t, g, o, 0, 0)
	exchange(t, g, o, "start")

	epochs := map[string][]uint64{} // by sender
	type delayed struct {
		run      int
		from, to endpoint
		m        sent
	}
	var held []delayed
	// run sends n messages and delivers them, except that for a
	// one-sided run (number ≥ 0) its first, middle and last are held back.
	run := func(from, to endpoint, n int, label string, number int) {
		t.Helper()
		for j, m := range sendBatch(t, from, to, n, label) {
			epochs[from.String()] = append(epochs[from.String()], pqEpoch(t, m.msg))
			if number >= 0 && (j == 0 || j == n/2 || j == n-1) {
				held = append(held, delayed{number, from, to, m})
				continue
			}
			deliver(t, from, to, m.msg, m.text)
		}
	}
	// deliverHeld delivers, newest first, the held messages of runs up to
	// last, crossing SPQR epochs (and up to four Diffie-Hellman ratchet
	// steps, within the five receiving chains a session keeps).
	crossed := 0
	deliverHeld := func(last int) {
		t.Helper()
		var keep []delayed
		for k := len(held) - 1; k >= 0; k-- {
			h := held[k]
			if h.run > last {
				keep = append([]delayed{h}, keep...)
				continue
			}
			if h.to == endpoint(g) && storedPQEpoch(t, sessionBytes(t, g, o.addr)) >= pqEpoch(t, h.m.msg) {
				crossed++ // keys of an epoch before our current one
			}
			deliver(t, h.from, h.to, h.m.msg, h.m.text)
		}
		held = keep
	}
	phase := func(name string) {
		t.Helper()
		last := func(who endpoint) uint64 {
			if es := epochs[who.String()]; len(es) > 0 {
				return es[len(es)-1]
			}
			return 0
		}
		t.Logf("after %s: our stored SPQR epoch %d; last message epoch ours %d, official's %d",
			name, storedPQEpoch(t, sessionBytes(t, g, o.addr)), last(g), last(o))
	}
	// Each one-sided run moves the braid one step (header, ciphertext 1,
	// encapsulation key, ciphertext 2, ...): seven complete epoch 1 (we
	// send the key, official encapsulates) and epoch 2 (the other way).
	for i := range 7 {
		from, to := endpoint(g), endpoint(o)
		if i%2 == 1 {
			from, to = o, g
		}
		run(from, to, 120, fmt.Sprint("one-sided run ", i), i)
		deliverHeld(i - 4)
		phase(fmt.Sprintf("one-sided run %d, 120 from %s", i, from))
	}
	deliverHeld(7)
	if crossed == 0 {
		t.Fatal("no held-back message reached us after its SPQR epoch was over")
	}
	t.Logf("%d held-back messages reached us after their SPQR epoch", crossed)
	// Message epoch e carries keys of chain epoch e-1.
	if e := storedPQEpoch(t, sessionBytes(t, g, o.addr)); e < 2 || slices.Max(epochs[o.String()]) < 2 {
		t.Fatalf("after the one-sided runs: our stored SPQR epoch %d, official's message epoch %d; want 2 and 2",
			e, slices.Max(epochs[o.String()]))
	}
	// Then message by message until a further epoch is done (about 50
	// rounds: one key and ciphertext in chunks each way).
	rounds := 0
	for ; rounds < 150; rounds++ {
		if storedPQEpoch(t, sessionBytes(t, g, o.addr)) >= 3 && slices.Max(epochs[o.String()]) >= 3 && slices.Max(epochs[g.String()]) >= 3 {
			break
		}
		run(o, g, 1, fmt.Sprint("alternating ", rounds), -1)
		run(g, o, 1, fmt.Sprint("alternating ", rounds), -1)
	}
	phase(fmt.Sprint(rounds, " alternating rounds"))
	if rounds == 150 {
		t.Fatal("the post-quantum ratchet did not reach epoch 3 in 150 alternating rounds")
	}
	converse(t, g, o, 2)
	for who, es := range epochs {
		if !slices.IsSorted(es) {
			t.Fatalf("%s's message epochs went back: %v", who, es)
		}
	}
}

// pqEpoch reads the SPQR epoch from a message's pq_ratchet field.
func pqEpoch(t *testing.T, m protocol.CiphertextMessage) uint64 {
	t.Helper()
	var sm *protocol.SignalMessage
	var err error
	if m.Type == protocol.TypePreKey {
		var pk *protocol.PreKeySignalMessage
		if pk, err = protocol.ParsePreKeySignalMessage(m.Bytes); err == nil {
			sm = pk.Message
		}
	} else {
		sm, err = protocol.ParseSignalMessage(m.Bytes)
	}
	if err != nil {
		t.Fatalf("parse message: %v", err)
	}
	pq := sm.PQRatchet
	if len(pq) < 3 || pq[0] != 1 {
		t.Fatalf("pq_ratchet field %x: want an SPQR V1 message", pq)
	}
	e, n := binary.Uvarint(pq[1:])
	if n <= 0 || e == 0 {
		t.Fatalf("pq_ratchet field %x: bad epoch", pq)
	}
	return e
}

// storedPQEpoch reads the SPQR chain's current epoch from a serialized
// session record: RecordStructure.current_session (1) →
// SessionStructure.pq_ratchet_state (15) → PqRatchetState.chain (2) →
// Chain.current_epoch (2).
func storedPQEpoch(t *testing.T, record []byte) uint64 {
	t.Helper()
	b := record
	for _, n := range []protowire.Number{1, 15, 2} {
		var ok bool
		if b, ok = pbBytes(b, n); !ok {
			t.Fatalf("session record: no field %d on the way to the SPQR chain", n)
		}
	}
	return pbVarint(b, 2)
}

func pbBytes(b []byte, want protowire.Number) ([]byte, bool) {
	var out []byte
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == want && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			out, found = v, true
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return out, found
}

func pbVarint(b []byte, want protowire.Number) uint64 {
	var out uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == want && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0
			}
			out = v
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return out
}

// officialDistribution is official's SenderKeyDistributionMessage with the
// values official's own accessors read from it.
type officialDistribution struct {
	Message        []byte `json:"message"`
	DistributionID string `json:"distributionId"`
	ChainID        uint32 `json:"chainId"`
	Iteration      uint32 `json:"iteration"`
}

func (o *official) distribution(t *testing.T, dist uuid.UUID) officialDistribution {
	t.Helper()
	var r officialDistribution
	err := o.peer.Call("createDistribution", map[string]any{
		"client": o.client, "sender": la(o.addr), "distributionId": dist.String(),
	}, &r)
	if err != nil {
		t.Fatalf("official createDistribution: %v", err)
	}
	return r
}

// parseOfficialDistribution parses official's distribution message with
// our code and checks its fields against official's accessors.
func parseOfficialDistribution(t *testing.T, d officialDistribution) *protocol.SenderKeyDistributionMessage {
	t.Helper()
	m, err := protocol.ParseSenderKeyDistributionMessage(d.Message)
	if err != nil {
		t.Fatalf("parse official's distribution message: %v", err)
	}
	if m.DistributionID.String() != d.DistributionID || m.ChainID != d.ChainID || m.Iteration != d.Iteration ||
		m.Version != 3 || len(m.ChainKey) != 32 || !bytes.Equal(m.Bytes(), d.Message) {
		t.Fatalf("official's distribution message parsed as id %s chain %d iteration %d version %d; official says id %s chain %d iteration %d",
			m.DistributionID, m.ChainID, m.Iteration, m.Version, d.DistributionID, d.ChainID, d.Iteration)
	}
	return m
}

func checkSenderKeyMessage(t *testing.T, body []byte, dist uuid.UUID, chainID, iteration uint32) {
	t.Helper()
	m, err := protocol.ParseSenderKeyMessage(body)
	if err != nil {
		t.Fatalf("parse SenderKeyMessage: %v", err)
	}
	if m.DistributionID != dist || m.ChainID != chainID || m.Iteration != iteration || m.Version != 3 ||
		body[0] != 0x33 || !bytes.Equal(m.Bytes(), body) {
		t.Fatalf("SenderKeyMessage: id %s chain %d iteration %d version %d (first byte %#x); want id %s chain %d iteration %d",
			m.DistributionID, m.ChainID, m.Iteration, m.Version, body[0], dist, chainID, iteration)
	}
}

type groupMsg struct {
	text, body []byte
}

// TestInteropGroupGoSender: our sender key read by official members, in
// and out of order, a late joiner, and a new chain after a member left.
func TestInteropGroupGoSender(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()
	g := newDevice(t, 1)
	members := []*official{newOfficial(t, peer, 2), newOfficial(t, peer, 3)}
	goMember := newDevice(t, 5) // removed with members[1]
	dist := uuid.New()
	skdm, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, g.store, g.addr, dist)
	if err != nil {
		t.Fatal(err)
	}
	chain1 := skdm.ChainID
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, goMember.store, g.addr, skdm); err != nil {
		t.Fatal(err)
	}
	for _, o := range members {
		var r struct {
			DistributionID string `json:"distributionId"`
		}
		if err := peer.Call("processDistribution", map[string]any{"client": o.client, "sender": la(g.addr), "message": skdm.Bytes()}, &r); err != nil {
			t.Fatalf("official processing our distribution message: %v", err)
		}
		if r.DistributionID != dist.String() {
			t.Fatalf("official read distribution id %s from our message, want %s", r.DistributionID, dist)
		}
	}
	encrypt := func(n int, label string) []groupMsg {
		t.Helper()
		out := make([]groupMsg, n)
		for i := range out {
			out[i].text = fmt.Appendf(nil, "%s %d %x", label, i, randomBytes(t, i*17%60))
			m, err := protocol.GroupEncrypt(ctx, rand.Reader, g.store, g.addr, dist, out[i].text)
			if err != nil {
				t.Fatal(err)
			}
			out[i].body = m.Bytes()
		}
		return out
	}
	receive := func(o *official, m groupMsg) {
		t.Helper()
		got, err := peer.GroupDecrypt(o.client, la(g.addr), m.body)
		if err != nil {
			t.Fatalf("official %s group-decrypting %q: %v", o.addr, m.text, err)
		}
		if !bytes.Equal(got, m.text) {
			t.Fatalf("official got %q, want %q", got, m.text)
		}
	}

	msgs := encrypt(6, "group")
	for i, m := range msgs {
		checkSenderKeyMessage(t, m.body, dist, chain1, uint32(i))
		receive(members[0], m)
	}
	for _, i := range shuffler(t).Perm(len(msgs)) {
		receive(members[1], msgs[i])
	}
	for _, o := range members {
		if _, err := peer.GroupDecrypt(o.client, la(g.addr), msgs[3].body); !libsignalpeer.HasCode(err, "DuplicatedMessage") {
			t.Fatalf("official, duplicate group message: %v, want DuplicatedMessage", err)
		}
	}
	// Our first distribution message again does not rewind the chain.
	if err := peer.ProcessDistribution(members[0].client, la(g.addr), skdm.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.GroupDecrypt(members[0].client, la(g.addr), msgs[1].body); !libsignalpeer.HasCode(err, "DuplicatedMessage") {
		t.Fatalf("official, group message after our distribution message was replayed: %v, want DuplicatedMessage", err)
	}

	// A late joiner gets the chain at its current iteration: it reads
	// what follows, not what came before.
	late := newOfficial(t, peer, 4)
	again, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, g.store, g.addr, dist)
	if err != nil {
		t.Fatal(err)
	}
	if again.ChainID != chain1 || again.Iteration != 6 {
		t.Fatalf("distribution message after 6 messages: chain %d iteration %d, want chain %d iteration 6", again.ChainID, again.Iteration, chain1)
	}
	if err := peer.ProcessDistribution(late.client, la(g.addr), again.Bytes()); err != nil {
		t.Fatal(err)
	}
	next := encrypt(2, "after the late joiner")
	for _, o := range append(members, late) {
		for _, m := range next {
			receive(o, m)
		}
	}
	if _, err := peer.GroupDecrypt(late.client, la(g.addr), msgs[5].body); err == nil {
		t.Fatal("the late joiner decrypted a message from before it joined")
	} else {
		t.Logf("official late joiner, earlier message: %v", err)
	}

	// members[1] leaves: a new chain, distributed to the others only.
	held := encrypt(1, "held back, old chain")[0]
	g.store.DeleteSenderKey(g.addr, dist)
	skdm2, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, g.store, g.addr, dist)
	if err != nil {
		t.Fatal(err)
	}
	if skdm2.ChainID == chain1 || skdm2.Iteration != 0 || skdm2.SigningKey.Equal(skdm.SigningKey) || bytes.Equal(skdm2.ChainKey, skdm.ChainKey) {
		t.Fatalf("new chain %d iteration %d after deleting our sender key; old chain %d", skdm2.ChainID, skdm2.Iteration, chain1)
	}
	for _, o := range []*official{members[0], late} {
		if err := peer.ProcessDistribution(o.client, la(g.addr), skdm2.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	after := encrypt(3, "after the removal")
	for i, m := range after {
		checkSenderKeyMessage(t, m.body, dist, skdm2.ChainID, uint32(i))
		receive(members[0], m)
		receive(late, m)
		_, err := peer.GroupDecrypt(members[1].client, la(g.addr), m.body)
		if err == nil {
			t.Fatal("the removed member decrypted a message of the new chain")
		}
		// libsignal's NoSenderKeyState, a Generic error in 0.103's Node API.
		if !officialError(err, "Generic", "missing sender key state") {
			t.Fatalf("removed official member: %v, want missing sender key state", err)
		}
		if _, err := protocol.GroupDecrypt(ctx, goMember.store, g.addr, m.body); !errors.Is(err, protocol.ErrNoSenderKey) {
			t.Fatalf("removed go member: %v, want ErrNoSenderKey", err)
		}
	}
	// The remaining members still read a late message of the old chain;
	// the removed one too, it had that chain.
	receive(members[0], held)
	receive(members[1], held)
	if got, err := protocol.GroupDecrypt(ctx, goMember.store, g.addr, held.body); err != nil || !bytes.Equal(got, held.text) {
		t.Fatalf("removed go member, late message of the old chain: %q, %v", got, err)
	}
}

// TestInteropGroupOfficialSender: official's sender key read by our
// members, out of order, with duplicates refused, a late joiner, and a new
// distribution after a member left.
func TestInteropGroupOfficialSender(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()
	o := newOfficial(t, peer, 2)
	members := []*device{newDevice(t, 1), newDevice(t, 3)}
	dist := uuid.New()
	d := o.distribution(t, dist)
	skdm := parseOfficialDistribution(t, d)
	if skdm.Iteration != 0 {
		t.Fatalf("official's first distribution message has iteration %d", skdm.Iteration)
	}
	for _, g := range members {
		if err := protocol.ProcessSenderKeyDistributionMessage(ctx, g.store, o.addr, skdm); err != nil {
			t.Fatal(err)
		}
	}
	encrypt := func(dist uuid.UUID, n int, label string) []groupMsg {
		t.Helper()
		out := make([]groupMsg, n)
		for i := range out {
			out[i].text = fmt.Appendf(nil, "%s %d %x", label, i, randomBytes(t, i*19%60))
			body, err := peer.GroupEncrypt(o.client, la(o.addr), dist.String(), out[i].text)
			if err != nil {
				t.Fatal(err)
			}
			out[i].body = body
		}
		return out
	}
	receive := func(g *device, m groupMsg) {
		t.Helper()
		got, err := protocol.GroupDecrypt(ctx, g.store, o.addr, m.body)
		if err != nil {
			t.Fatalf("go %s group-decrypting %q: %v", g.addr, m.text, err)
		}
		if !bytes.Equal(got, m.text) {
			t.Fatalf("go got %q, want %q", got, m.text)
		}
	}
	senderKey := func(g *device, dist uuid.UUID) []byte {
		t.Helper()
		r, err := g.store.LoadSenderKey(ctx, o.addr, dist)
		if err != nil || r == nil {
			t.Fatalf("load sender key: %v, %v", r, err)
		}
		return r.Bytes()
	}

	msgs := encrypt(dist, 8, "group")
	for i, m := range msgs {
		checkSenderKeyMessage(t, m.body, dist, d.ChainID, uint32(i))
		receive(members[0], m)
	}
	for _, i := range shuffler(t).Perm(len(msgs)) {
		receive(members[1], msgs[i])
	}
	for _, g := range members {
		before := senderKey(g, dist)
		if _, err := protocol.GroupDecrypt(ctx, g.store, o.addr, msgs[2].body); !errors.Is(err, protocol.ErrDuplicateMessage) {
			t.Fatalf("go, duplicate group message: %v, want ErrDuplicateMessage", err)
		}
		if !bytes.Equal(before, senderKey(g, dist)) {
			t.Fatal("refusing a duplicate group message changed the sender key record")
		}
	}
	// Official's first distribution message again does not rewind the
	// chain (the state with that chain id and signing key is kept).
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, members[0].store, o.addr, skdm); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.GroupDecrypt(ctx, members[0].store, o.addr, msgs[1].body); !errors.Is(err, protocol.ErrDuplicateMessage) {
		t.Fatalf("go, group message after official's distribution message was replayed: %v, want ErrDuplicateMessage", err)
	}

	// A late joiner: official's distribution message now has iteration 8.
	late := newDevice(t, 4)
	d2 := o.distribution(t, dist)
	skdmLate := parseOfficialDistribution(t, d2)
	if d2.ChainID != d.ChainID || d2.Iteration != 8 {
		t.Fatalf("official's distribution message after 8 messages: %+v", d2)
	}
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, late.store, o.addr, skdmLate); err != nil {
		t.Fatal(err)
	}
	next := encrypt(dist, 3, "after the late joiner")
	for _, g := range append(members, late) {
		for _, i := range []int{2, 0, 1} {
			receive(g, next[i])
		}
	}
	if _, err := protocol.GroupDecrypt(ctx, late.store, o.addr, msgs[7].body); err == nil {
		t.Fatal("the late joiner decrypted a message from before it joined")
	} else if !errors.Is(err, protocol.ErrDuplicateMessage) {
		// official says DuplicatedMessage for the same case (see TestInteropGroupGoSender's log)
		t.Fatalf("go late joiner, earlier message: %v, want ErrDuplicateMessage as official", err)
	}

	// members[1] leaves. Official has no way to reset its own sender key
	// for a distribution, so it starts a new distribution id, sent to the
	// others only.
	held := encrypt(dist, 1, "held back, old distribution")[0]
	dist2 := uuid.New()
	d3 := o.distribution(t, dist2)
	skdm2 := parseOfficialDistribution(t, d3)
	for _, g := range []*device{members[0], late} {
		if err := protocol.ProcessSenderKeyDistributionMessage(ctx, g.store, o.addr, skdm2); err != nil {
			t.Fatal(err)
		}
	}
	after := encrypt(dist2, 3, "after the removal")
	for i, m := range after {
		checkSenderKeyMessage(t, m.body, dist2, d3.ChainID, uint32(i))
		receive(members[0], m)
		receive(late, m)
		if _, err := protocol.GroupDecrypt(ctx, members[1].store, o.addr, m.body); !errors.Is(err, protocol.ErrNoSenderKey) {
			t.Fatalf("removed go member: %v, want ErrNoSenderKey", err)
		}
	}
	receive(members[1], held)
	receive(members[0], held)
}

// TestInteropPlaintextSizes sends plaintexts around the AES block size and
// large ones, both ways and in a group, compared byte for byte.
func TestInteropPlaintextSizes(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 2)
	officialStarts(t, o, g, 0, 0)
	exchange(t, o, g, "start")
	dist := uuid.New()
	skdm, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, g.store, g.addr, dist)
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.ProcessDistribution(o.client, la(g.addr), skdm.Bytes()); err != nil {
		t.Fatal(err)
	}
	od := o.distribution(t, dist)
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, g.store, o.addr, parseOfficialDistribution(t, od)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 255, 256, 4096, 65537} {
		text := randomBytes(t, n)
		deliver(t, g, o, g.send(t, o.addr, text), text)
		deliver(t, o, g, o.send(t, g.addr, text), text)

		m, err := protocol.GroupEncrypt(ctx, rand.Reader, g.store, g.addr, dist, text)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := peer.GroupDecrypt(o.client, la(g.addr), m.Bytes()); err != nil || !bytes.Equal(got, text) {
			t.Fatalf("%d bytes: official group-decrypted %d bytes, %v", n, len(got), err)
		}
		body, err := peer.GroupEncrypt(o.client, la(o.addr), dist.String(), text)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := protocol.GroupDecrypt(ctx, g.store, o.addr, body); err != nil || !bytes.Equal(got, text) {
			t.Fatalf("%d bytes: we group-decrypted %d bytes, %v", n, len(got), err)
		}
	}
}
