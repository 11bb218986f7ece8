package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parleyhq/parley/protocol"
)

// Fuzz targets for everything that reads bytes from the network or from
// storage. Each is seeded with real messages and records made by the
// package's own API (fuzzFixture). Run one with
//
//	go test -run='^$' -fuzz='^FuzzDecrypt$' -fuzztime=20s -fuzzminimizetime=5s ./protocol/
//
// (make fuzz runs them all). The seeds are kilobytes long (Kyber
// ciphertexts, SPQR states), so minimizing a new input can take the
// default 60 s; -fuzzminimizetime keeps the run fuzzing.

// fuzzFix is a small world: bob has a session with alice (several
// chains, skipped keys, SPQR under way), and carol and dave have started
// sessions with bob whose PreKey messages bob has not seen.
type fuzzFix struct {
	alice, bob, carol, dave *device
	bobWithAlice            []byte // bob's stored session with alice

	valid      []seedMsg // messages bob can still decrypt
	duplicates []seedMsg // messages bob has decrypted already
	stale      []seedMsg // messages bob can no longer decrypt
	texts      map[string]bool

	sessionRecords [][]byte
	senderRecords  [][]byte
	distribution   uuid.UUID
	skdms          [][]byte // distribution messages
	groupMsgs      [][]byte // SenderKeyMessages
}

type seedMsg struct {
	from protocol.Address
	msg  protocol.CiphertextMessage
}

var shared struct {
	sync.Mutex
	fx *fuzzFix
}

// fuzzFixture returns the fixture, made once per process; users only read it.
func fuzzFixture(tb testing.TB) *fuzzFix {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.fx == nil {
		shared.fx = makeFuzzFixture(tb)
	}
	return shared.fx
}

func makeFuzzFixture(tb testing.TB) *fuzzFix {
	tb.Helper()
	ctx := context.Background()
	now := time.Now()
	fx := &fuzzFix{
		alice: newDevice(tb, 1), bob: newDevice(tb, 2), carol: newDevice(tb, 3), dave: newDevice(tb, 4),
		texts: map[string]bool{},
	}
	alice, bob := fx.alice, fx.bob
	send := func(from, to *device, text string) protocol.CiphertextMessage {
		fx.texts[text] = true
		return from.encrypt(tb, to.addr, text)
	}
	recv := func(to, from *device, m protocol.CiphertextMessage) {
		tb.Helper()
		if _, err := to.decrypt(from.addr, m); err != nil {
			tb.Fatalf("fixture: %s decrypt: %v", to.addr, err)
		}
	}
	start := func(from, to *device, preKey, kyber int) {
		tb.Helper()
		if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, from.store, from.addr, to.addr, to.bundle(preKey, kyber), now); err != nil {
			tb.Fatal(err)
		}
	}

	start(alice, bob, 0, 0)
	p0, p1 := send(alice, bob, "prekey 0"), send(alice, bob, "prekey 1")
	recv(bob, alice, p0)
	for i := range 12 {
		recv(alice, bob, send(bob, alice, "bob "+string(rune('a'+i))))
		recv(bob, alice, send(alice, bob, "alice "+string(rune('a'+i))))
	}
	old := send(alice, bob, "old chain, late") // on a chain bob will leave behind
	recv(alice, bob, send(bob, alice, "ratchet"))
	var s []protocol.CiphertextMessage
	for i := range 4 {
		s = append(s, send(alice, bob, "new chain "+string(rune('0'+i))))
	}
	recv(bob, alice, s[3])
	recv(bob, alice, s[1])
	start(fx.carol, bob, 1, 1)
	c0 := send(fx.carol, bob, "from carol")
	start(fx.dave, bob, -1, -1)
	d0 := send(fx.dave, bob, "from dave, no one-time keys")
	fx.valid = []seedMsg{{alice.addr, old}, {alice.addr, s[0]}, {alice.addr, s[2]},
		{fx.carol.addr, c0}, {fx.dave.addr, d0}}
	fx.duplicates = []seedMsg{{alice.addr, s[1]}, {alice.addr, s[3]}}
	// p0's and p1's chain is older than the receiving chains bob keeps:
	// they no longer decrypt (nor count as duplicates), as with official
	// libsignal.
	fx.stale = []seedMsg{{alice.addr, p0}, {alice.addr, p1}}
	fx.bobWithAlice = sessionBytesTB(tb, bob, alice.addr)

	// Records: both ends of that session, a session not yet answered, an
	// archived-only record, and a record holding a current and an
	// archived session (alice starts over with bob's next prekeys).
	fx.sessionRecords = [][]byte{fx.bobWithAlice, sessionBytesTB(tb, alice, bob.addr), sessionBytesTB(tb, fx.carol, bob.addr)}
	r, err := bob.store.LoadSession(ctx, alice.addr)
	if err != nil {
		tb.Fatal(err)
	}
	r.ArchiveCurrentState()
	fx.sessionRecords = append(fx.sessionRecords, r.Bytes())
	x, y := newDevice(tb, 5), newDevice(tb, 6)
	start(x, y, 0, 0)
	recv(y, x, send(x, y, "x1"))
	recv(x, y, send(y, x, "y1"))
	start(x, y, 1, -1)
	recv(y, x, send(x, y, "x2"))
	fx.sessionRecords = append(fx.sessionRecords, sessionBytesTB(tb, x, y.addr), sessionBytesTB(tb, y, x.addr))
	for _, b := range fx.sessionRecords {
		r, err := protocol.ParseSessionRecord(b)
		if err != nil || !bytes.Equal(r.Bytes(), b) {
			tb.Fatalf("fixture: a stored session record does not read back: %v", err)
		}
	}

	// Groups: alice's chain, read by bob out of order.
	fx.distribution = uuid.New()
	skdm, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, alice.store, alice.addr, fx.distribution)
	if err != nil {
		tb.Fatal(err)
	}
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, bob.store, alice.addr, skdm); err != nil {
		tb.Fatal(err)
	}
	fx.skdms = append(fx.skdms, skdm.Bytes())
	for i := range 5 {
		m, err := protocol.GroupEncrypt(ctx, rand.Reader, alice.store, alice.addr, fx.distribution, []byte("group "+string(rune('0'+i))))
		if err != nil {
			tb.Fatal(err)
		}
		fx.groupMsgs = append(fx.groupMsgs, m.Bytes())
	}
	for _, i := range []int{3, 0} {
		if _, err := protocol.GroupDecrypt(ctx, bob.store, alice.addr, fx.groupMsgs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	later, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, alice.store, alice.addr, fx.distribution)
	if err != nil {
		tb.Fatal(err)
	}
	fx.skdms = append(fx.skdms, later.Bytes())
	for _, st := range []*protocol.MemoryStore{alice.store, bob.store} {
		r, err := st.LoadSenderKey(ctx, alice.addr, fx.distribution)
		if err != nil || r == nil {
			tb.Fatalf("fixture: sender key: %v", err)
		}
		b := r.Bytes()
		back, err := protocol.ParseSenderKeyRecord(b)
		if err != nil || !bytes.Equal(back.Bytes(), b) {
			tb.Fatalf("fixture: a sender key record does not read back: %v", err)
		}
		fx.senderRecords = append(fx.senderRecords, b)
	}
	return fx
}

func (fx *fuzzFix) all() []seedMsg {
	return append(append(append([]seedMsg(nil), fx.valid...), fx.duplicates...), fx.stale...)
}

func sessionBytesTB(tb testing.TB, d *device, with protocol.Address) []byte {
	tb.Helper()
	r, err := d.store.LoadSession(context.Background(), with)
	if err != nil || r == nil {
		tb.Fatalf("load session: %v, %v", r, err)
	}
	return r.Bytes()
}

// freshBob is a store holding exactly what bob's held when the fixture was
// made: his keys (less the prekeys alice used), alice's identity and his
// session with her.
func (fx *fuzzFix) freshBob(tb testing.TB) *protocol.MemoryStore {
	b := fx.bob
	st := protocol.NewMemoryStore(b.identity, b.regID)
	st.AddSignedPreKey(b.signed)
	st.AddKyberPreKey(b.lastResort, true)
	for _, k := range b.preKeys[1:] {
		st.AddPreKey(k)
	}
	for _, k := range b.kyberKeys[1:] {
		st.AddKyberPreKey(k, false)
	}
	st.Trust(fx.alice.addr.Name, fx.alice.identity.Public)
	r, err := protocol.ParseSessionRecord(fx.bobWithAlice)
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.StoreSession(context.Background(), fx.alice.addr, r); err != nil {
		tb.Fatal(err)
	}
	return st
}

// snapshot is what of bob's store a failed Decrypt must leave alone.
func (fx *fuzzFix) snapshot(t *testing.T, st *protocol.MemoryStore) string {
	ctx := context.Background()
	var b bytes.Buffer
	for _, a := range []protocol.Address{fx.alice.addr, fx.carol.addr, fx.dave.addr} {
		r, err := st.LoadSession(ctx, a)
		if err != nil {
			t.Fatalf("load session: %v", err)
		}
		if r != nil {
			b.Write(r.Bytes())
		}
		b.WriteString("|")
	}
	for _, k := range fx.bob.preKeys[1:] {
		_, err := st.LoadPreKey(ctx, k.ID)
		b.WriteString(map[bool]string{true: "p", false: "-"}[err == nil])
	}
	for _, k := range slices.Concat(fx.bob.kyberKeys[1:], []protocol.KyberPreKeyRecord{fx.bob.lastResort}) {
		_, err := st.LoadKyberPreKey(ctx, k.ID)
		b.WriteString(map[bool]string{true: "k", false: "-"}[err == nil])
	}
	// Identities: alice's is known; carol's and dave's are not (so any
	// key, alice's say, is trusted for them).
	for _, a := range []protocol.Address{fx.alice.addr, fx.carol.addr, fx.dave.addr} {
		ok, err := st.IsTrustedIdentity(ctx, a, fx.alice.identity.Public, protocol.Receiving)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(map[bool]string{true: "t", false: "u"}[ok])
	}
	return b.String()
}

// FuzzDecrypt feeds hostile bytes, as either message type and from any of
// three senders, to bob: no panic, a failure changes nothing in his store
// (sessions, prekeys, identities), and a success yields a plaintext that
// was really sent.
func FuzzDecrypt(f *testing.F) {
	fx := fuzzFixture(f)
	// The fixture is what it claims: bob decrypts each valid message and
	// refuses each duplicate.
	ctx := context.Background()
	for i, m := range fx.valid {
		if _, err := protocol.Decrypt(ctx, rand.Reader, fx.freshBob(f), fx.bob.addr, m.from, m.msg.Type, m.msg.Bytes); err != nil {
			f.Fatalf("fixture: valid message %d: %v", i, err)
		}
	}
	for i, m := range fx.duplicates {
		if _, err := protocol.Decrypt(ctx, rand.Reader, fx.freshBob(f), fx.bob.addr, m.from, m.msg.Type, m.msg.Bytes); !errors.Is(err, protocol.ErrDuplicateMessage) {
			f.Fatalf("fixture: duplicate %d: %v, want ErrDuplicateMessage", i, err)
		}
	}
	sel := func(m seedMsg) byte {
		s := byte(0)
		if m.msg.Type == protocol.TypePreKey {
			s |= 1
		}
		switch m.from {
		case fx.carol.addr:
			s |= 2
		case fx.dave.addr:
			s |= 4
		}
		return s
	}
	for _, m := range fx.all() {
		f.Add(sel(m), m.msg.Bytes)
		f.Add(sel(m)^1, m.msg.Bytes) // the wrong type
		bad := bytes.Clone(m.msg.Bytes)
		bad[len(bad)/2] ^= 0x20
		f.Add(sel(m), bad)
		f.Add(sel(m), m.msg.Bytes[:len(m.msg.Bytes)-3])
	}
	f.Fuzz(func(t *testing.T, sel byte, body []byte) {
		st := fx.freshBob(t)
		typ := protocol.TypeSignal
		if sel&1 != 0 {
			typ = protocol.TypePreKey
		}
		from := fx.alice.addr
		switch {
		case sel&4 != 0:
			from = fx.dave.addr
		case sel&2 != 0:
			from = fx.carol.addr
		}
		if sel&8 != 0 {
			typ = protocol.MessageType(sel >> 4) // also types that are not one-to-one
		}
		before := fx.snapshot(t, st)
		pt, err := protocol.Decrypt(ctx, rand.Reader, st, fx.bob.addr, from, typ, body)
		if err != nil {
			if after := fx.snapshot(t, st); after != before {
				t.Fatalf("Decrypt failed (%v) but changed the store", err)
			}
			return
		}
		if !fx.texts[string(pt)] {
			t.Fatalf("Decrypt of hostile bytes succeeded with a plaintext never sent: %q", pt)
		}
	})
}

func wantMessageError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, protocol.ErrInvalidMessage) && !errors.Is(err, protocol.ErrLegacyMessage) {
		t.Fatalf("parse error %v wraps neither ErrInvalidMessage nor ErrLegacyMessage", err)
	}
}

func FuzzParseSignalMessage(f *testing.F) {
	fx := fuzzFixture(f)
	for _, m := range fx.all() {
		if m.msg.Type == protocol.TypeSignal {
			f.Add(m.msg.Bytes)
		} else if pk, err := protocol.ParsePreKeySignalMessage(m.msg.Bytes); err == nil {
			f.Add(pk.Message.Bytes())
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseSignalMessage(b)
		if err != nil {
			wantMessageError(t, err)
			return
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatal("Bytes() differs from the parsed bytes")
		}
		again, err := protocol.ParseSignalMessage(m.Bytes())
		if err != nil || again.Version != m.Version || !again.RatchetKey.Equal(m.RatchetKey) || again.Counter != m.Counter ||
			again.PreviousCounter != m.PreviousCounter || !bytes.Equal(again.Ciphertext, m.Ciphertext) ||
			!bytes.Equal(again.PQRatchet, m.PQRatchet) || !bytes.Equal(again.Addresses, m.Addresses) {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}

func FuzzParsePreKeySignalMessage(f *testing.F) {
	fx := fuzzFixture(f)
	for _, m := range fx.all() {
		if m.msg.Type == protocol.TypePreKey {
			f.Add(m.msg.Bytes)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParsePreKeySignalMessage(b)
		if err != nil {
			wantMessageError(t, err)
			return
		}
		if m.Message == nil {
			t.Fatal("parsed without its SignalMessage")
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatal("Bytes() differs from the parsed bytes")
		}
		again, err := protocol.ParsePreKeySignalMessage(m.Bytes())
		if err != nil || again.Version != m.Version || again.RegistrationID != m.RegistrationID ||
			(again.PreKeyID == nil) != (m.PreKeyID == nil) || (m.PreKeyID != nil && *again.PreKeyID != *m.PreKeyID) ||
			again.SignedPreKeyID != m.SignedPreKeyID || again.KyberPreKeyID != m.KyberPreKeyID ||
			!bytes.Equal(again.KyberCiphertext, m.KyberCiphertext) || !again.BaseKey.Equal(m.BaseKey) ||
			!again.IdentityKey.Equal(m.IdentityKey) || !bytes.Equal(again.Message.Bytes(), m.Message.Bytes()) {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}

func FuzzParseSenderKeyMessage(f *testing.F) {
	fx := fuzzFixture(f)
	for _, b := range fx.groupMsgs {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseSenderKeyMessage(b)
		if err != nil {
			wantMessageError(t, err)
			return
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatal("Bytes() differs from the parsed bytes")
		}
		again, err := protocol.ParseSenderKeyMessage(m.Bytes())
		if err != nil || again.Version != m.Version || again.DistributionID != m.DistributionID || again.ChainID != m.ChainID ||
			again.Iteration != m.Iteration || !bytes.Equal(again.Ciphertext, m.Ciphertext) {
			t.Fatalf("reparse differs: %v", err)
		}
	})
}

func FuzzParseSenderKeyDistributionMessage(f *testing.F) {
	fx := fuzzFixture(f)
	for _, b := range fx.skdms {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseSenderKeyDistributionMessage(b)
		if err != nil {
			wantMessageError(t, err)
			return
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatal("Bytes() differs from the parsed bytes")
		}
		again, err := protocol.ParseSenderKeyDistributionMessage(m.Bytes())
		if err != nil || again.Version != m.Version || again.DistributionID != m.DistributionID || again.ChainID != m.ChainID ||
			again.Iteration != m.Iteration || !bytes.Equal(again.ChainKey, m.ChainKey) || !again.SigningKey.Equal(m.SigningKey) {
			t.Fatalf("reparse differs: %v", err)
		}
		// Whatever parses can be stored and used without a panic.
		st := protocol.NewMemoryStore(fx.bob.identity, fx.bob.regID)
		if err := protocol.ProcessSenderKeyDistributionMessage(context.Background(), st, fx.alice.addr, m); err != nil {
			return
		}
		for _, g := range fx.groupMsgs {
			protocol.GroupDecrypt(context.Background(), st, fx.alice.addr, g)
		}
	})
}

func wantStateError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, protocol.ErrInvalidState) && !errors.Is(err, protocol.ErrLegacyMessage) {
		t.Fatalf("record error %v wraps neither ErrInvalidState nor ErrLegacyMessage", err)
	}
}

// FuzzParseSessionRecord reads hostile stored records: no panic; what
// parses writes out in a form that reads back to itself; and using it to
// encrypt or decrypt fails cleanly or works, without a panic.
func FuzzParseSessionRecord(f *testing.F) {
	fx := fuzzFixture(f)
	for _, b := range fx.sessionRecords {
		f.Add(b)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSessionRecord(b)
		if err != nil {
			wantStateError(t, err)
			return
		}
		out := r.Bytes()
		again, err := protocol.ParseSessionRecord(out)
		if err != nil {
			t.Fatalf("a record's own Bytes() do not parse: %v", err)
		}
		if !bytes.Equal(again.Bytes(), out) {
			t.Fatal("Bytes() of a parsed record is not a fixed point")
		}
		now := time.Now()
		r.HasCurrentSession(now)
		r.RemoteRegistrationID()
		r.RemoteIdentity()
		r.Version()

		// One use per input (each costs about a millisecond): encrypt, or
		// decrypt one of alice's messages.
		st := fx.freshBob(t)
		if err := st.StoreSession(ctx, fx.alice.addr, r); err != nil {
			t.Fatal(err)
		}
		if op := len(b) % 4; op == 0 {
			protocol.Encrypt(ctx, rand.Reader, st, fx.bob.addr, fx.alice.addr, []byte("hello"), now)
		} else {
			m := fx.valid[op-1] // alice's
			protocol.Decrypt(ctx, rand.Reader, st, fx.bob.addr, fx.alice.addr, m.msg.Type, m.msg.Bytes)
		}
		again.ArchiveCurrentState()
		if _, err := protocol.ParseSessionRecord(again.Bytes()); err != nil {
			t.Fatalf("an archived record does not parse: %v", err)
		}
	})
}

// FuzzParseSenderKeyRecord reads hostile sender-key records: no panic,
// Bytes() a fixed point, and group operations on them fail cleanly.
func FuzzParseSenderKeyRecord(f *testing.F) {
	fx := fuzzFixture(f)
	for _, b := range fx.senderRecords {
		f.Add(b)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.ParseSenderKeyRecord(b)
		if err != nil {
			wantStateError(t, err)
			return
		}
		out := r.Bytes()
		again, err := protocol.ParseSenderKeyRecord(out)
		if err != nil {
			t.Fatalf("a record's own Bytes() do not parse: %v", err)
		}
		if !bytes.Equal(again.Bytes(), out) {
			t.Fatal("Bytes() of a parsed record is not a fixed point")
		}
		st := protocol.NewMemoryStore(fx.alice.identity, fx.alice.regID)
		if err := st.StoreSenderKey(ctx, fx.alice.addr, fx.distribution, r); err != nil {
			t.Fatal(err)
		}
		for _, g := range fx.groupMsgs {
			protocol.GroupDecrypt(ctx, st, fx.alice.addr, g)
		}
		protocol.GroupEncrypt(ctx, rand.Reader, st, fx.alice.addr, fx.distribution, []byte("hello"))
		protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, st, fx.alice.addr, fx.distribution)
	})
}

// TestParseSessionRecordErrorClass: a stored record whose pending PreKey
// base key is malformed is refused with ErrInvalidState, as
// ParseSessionRecord documents (found by FuzzParseSessionRecord).
func TestParseSessionRecordErrorClass(t *testing.T) {
	fx := fuzzFixture(t)
	pending := fx.sessionRecords[2] // carol's record, not yet answered
	// Replace the base key inside pending_pre_key (SessionStructure field
	// 9, field 2) by 6 bytes.
	cur, ok := pbBytes(pending, 1)
	if !ok {
		t.Fatal("no current session")
	}
	pre, ok := pbBytes(cur, 9)
	if !ok {
		t.Fatal("no pending prekey")
	}
	base, ok := pbBytes(pre, 2)
	if !ok || len(base) != 33 {
		t.Fatal("no base key")
	}
	bad := replaceField(t, pending, 1, replaceField(t, cur, 9, replaceField(t, pre, 2, []byte("short!"))))
	if _, err := protocol.ParseSessionRecord(bad); err == nil {
		t.Fatal("a record with a 6-byte base key parsed")
	} else if !errors.Is(err, protocol.ErrInvalidState) {
		t.Fatalf("ParseSessionRecord: %v; want an error wrapping ErrInvalidState", err)
	}
}

// replaceField rewrites a protobuf message with the value of its bytes
// field n replaced.
func replaceField(t *testing.T, msg []byte, n protowire.Number, value []byte) []byte {
	t.Helper()
	var out []byte
	for len(msg) > 0 {
		num, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			t.Fatal("bad tag")
		}
		l2 := protowire.ConsumeFieldValue(num, typ, msg[l:])
		if l2 < 0 {
			t.Fatal("bad field")
		}
		if num == n && typ == protowire.BytesType {
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, value)
		} else {
			out = append(out, msg[:l+l2]...)
		}
		msg = msg[l+l2:]
	}
	return out
}
