package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/api/apitest"
	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/store/sqlite"
)

var parleyd string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-cli-test")
	if err != nil {
		panic(err)
	}
	parleyd = filepath.Join(dir, "parleyd")
	if out, err := exec.Command("go", "build", "-o", parleyd, "../cmd/parleyd").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testCode = "246810"

// startRelay runs a real parleyd on SQLite serving bench.Number(0…9).
func startRelay(t *testing.T) string {
	base, _ := startRelayIn(t)
	return base
}

// startRelayIn is startRelay, also returning the relay's data directory.
func startRelayIn(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s, err := bench.Spawn(parleyd, dir, 10, testCode, nil, "--data-dir", data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	// Every request the client sends, and every answer, is checked
	// against api/openapi.yaml on the way.
	return apitest.ValidatingProxy(t, s.Base), data
}

func newAccount(t *testing.T, server string, i int) *Account {
	t.Helper()
	ctx := context.Background()
	a, _, err := Register(ctx, Options{Dir: t.TempDir(), Number: bench.Number(i), Server: server})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.Verify(ctx, testCode, ""); err != nil {
		t.Fatal(err)
	}
	return a
}

// receiveAll collects events until the queue is drained and quiet.
func receiveAll(t *testing.T, a *Account) []Event {
	t.Helper()
	var evs []Event
	err := a.Receive(context.Background(), ReceiveOptions{Timeout: 300 * time.Millisecond, Handle: func(e Event) { evs = append(evs, e) }})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func texts(evs []Event) []string {
	var out []string
	for _, e := range evs {
		switch e.Kind {
		case "message":
			out = append(out, e.Text)
		case "error":
			out = append(out, "error")
		}
	}
	return out
}

// TestHostileEnvelopes: tampered, truncated, malformed (a key that makes
// the library panic), unknown-type and replayed envelopes each produce an
// error event for that envelope alone; they are acknowledged, and the
// session keeps working, including for the genuine message the tampered
// copy came from.
func TestHostileEnvelopes(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "first", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := texts(receiveAll(t, bob)); strings.Join(got, ",") != "first" {
		t.Fatalf("first message: %v", got)
	}
	receiveAll(t, alice) // the delivery receipt

	r, err := alice.resolve(ctx, bob.Number)
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := content.Marshal(&content.Content{Timestamp: time.Now().UnixMilli(), Text: "genuine"})
	msgs, err := alice.encrypt(ctx, r, pt, false, nil)
	if err != nil || len(msgs) != 1 {
		t.Fatal(err, msgs)
	}
	good := msgs[0]
	tampered := bytes.Clone(good.Content)
	tampered[len(tampered)/2] ^= 0x40
	// A PreKeySignalMessage without a base key (fields as in libsignal's
	// wire.proto: 5 registration id, 6 signed prekey id, 1 prekey id,
	// 3 identity key, 4 message).
	emptyBaseKey := []byte{0x44}
	for _, n := range []protowire.Number{5, 6, 1} {
		emptyBaseKey = protowire.AppendVarint(protowire.AppendTag(emptyBaseKey, n, protowire.VarintType), 1)
	}
	emptyBaseKey = protowire.AppendBytes(protowire.AppendTag(emptyBaseKey, 3, protowire.BytesType), alice.IdentityKey())
	emptyBaseKey = protowire.AppendBytes(protowire.AppendTag(emptyBaseKey, 4, protowire.BytesType), good.Content)
	raw := func(typ int, c []byte) {
		t.Helper()
		_, err := alice.relay.SendMessages(ctx, bob.ID, relayclient.Send{Timestamp: time.Now().UnixMilli(),
			Messages: []relayclient.Outgoing{{DeviceID: 1, RegistrationID: good.RegistrationID, Type: typ, Content: c}}}, "")
		if err != nil {
			t.Fatal(err)
		}
	}
	raw(EnvelopeSignal, tampered)
	raw(EnvelopeSignal, good.Content[:len(good.Content)/2])
	raw(EnvelopePreKey, emptyBaseKey)
	raw(9, good.Content)
	raw(EnvelopeSignal, good.Content)
	raw(EnvelopeSignal, good.Content) // a replay: same ciphertext, new envelope
	if _, res, err := alice.SendText(ctx, "after", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}

	evs := receiveAll(t, bob)
	want := "error,error,error,error,genuine,error,after"
	if got := strings.Join(texts(evs), ","); got != want {
		t.Fatalf("events: %s, want %s\n%+v", got, want, evs)
	}
	for _, e := range evs {
		if e.Kind == "error" && !strings.Contains(e.Error, "malformed envelope") && !strings.Contains(e.Error, "cannot decrypt") {
			t.Errorf("error event without a reason a user can act on: %q", e.Error)
		}
	}
	if evs[len(evs)-2].Error == "" || !strings.Contains(evs[len(evs)-2].Error, "replay") {
		t.Errorf("replay not reported as such: %+v", evs[len(evs)-2])
	}
	// Everything was acknowledged: nothing comes back on a new connection.
	if again := receiveAll(t, bob); len(again) != 0 {
		t.Errorf("redelivered after acknowledgement: %+v", again)
	}
	// The history holds the genuine messages only.
	h, err := bob.History(ctx, alice.Number, 10)
	if err != nil || len(h) != 3 || h[1].Text != "genuine" {
		t.Errorf("history: %+v %v", h, err)
	}
}

// TestStateAtRest: nothing secret is readable in the account directory
// without the key file, and a moved sealed value does not open.
func TestStateAtRest(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	secret := "the eagle lands at midnight"
	if _, res, err := alice.SendText(ctx, secret, bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	receiveAll(t, bob)
	if err := alice.SetTimer(ctx, bob.Number, 3600); err != nil {
		t.Fatal(err)
	}
	receiveAll(t, bob)
	for _, a := range []*Account{alice, bob} {
		other := map[*Account]*Account{alice: bob, bob: alice}[a]
		var cred, priv []byte
		a.db.Update(ctx, func(tx *clientdb.Tx) error {
			cred, _ = tx.Value(ctx, metaCredential)
			priv, _ = tx.Value(ctx, metaIdentity)
			if r, err := tx.RecipientByNumber(ctx, other.Number); err != nil || r.Account != other.ID || r.IdentityKey == nil {
				t.Errorf("contact found by number: %+v %v", r, err)
			}
			return nil
		})
		if err := a.db.Close(); err != nil { // flush the WAL into the file
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(a.Dir(), "state.db*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for name, s := range map[string][]byte{"message text": []byte(secret), "credential": cred, "identity private key": priv,
				"contact's number": []byte(other.Number), "contact's number digits": []byte(other.Number[1:]),
				"contact's identity key": other.IdentityKey(), "contact's account id": []byte(other.ID)} {
				if len(s) > 0 && bytes.Contains(b, s) {
					t.Errorf("%s: %s is stored in the clear", f, name)
				}
			}
			if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v", f, st.Mode().Perm())
			}
		}
		if st, _ := os.Stat(a.Dir()); st.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v", a.Dir(), st.Mode().Perm())
		}
	}
}

// TestDeviceListRepair: when the recipient gains a device the sender has
// no session with, the relay answers 409 (missing) and the sender fetches
// that device's bundle and retries; when the device is removed, 409
// (extra) makes the sender drop the session. Linking devices is issue 6,
// so the second device is put into the relay's database directly.
func TestDeviceListRepair(t *testing.T) {
	ctx := context.Background()
	server, data := startRelayIn(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "one device", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	relayDB, err := sqlite.Open(ctx, filepath.Join(data, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer relayDB.Close()
	spk, _ := protocol.GenerateKeyPair(rand.Reader)
	spkPub, _ := keys.ParseECPublicKey(spk.Public.Bytes())
	kem, _ := protocol.GenerateKEMKeyPair(rand.Reader)
	kemPub := kem.Public.Bytes()
	sign := func(b []byte) keys.Signature {
		sig, err := bob.identity.Private.Sign(rand.Reader, b)
		if err != nil {
			t.Fatal(err)
		}
		return keys.Signature(sig)
	}
	dev, err := relayDB.AddDevice(ctx, uuid.MustParse(bob.ID), accounts.NewDevice{
		RegistrationID: 4242, Credential: make([]byte, 48), // never matches: this device does not connect
		SignedPreKey: keys.SignedPreKey{ID: 1, PublicKey: spkPub, Signature: sign(spkPub[:])},
		LastResort:   keys.KEMPreKey{ID: 1, PublicKey: kemPub, Signature: sign(kemPub)},
	}, int(time.Now().Unix()/86400))
	if err != nil || dev != 2 {
		t.Fatal(dev, err)
	}
	sessions := func() []int {
		var ds []int
		alice.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
			ds, err = tx.SessionDevices(ctx, bob.ID)
			return err
		})
		return ds
	}
	if _, res, err := alice.SendText(ctx, "two devices", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := sessions(); len(got) != 2 {
		t.Fatalf("after the 409 for a missing device alice has sessions with %v, want [1 2]", got)
	}
	if err := bob.RemoveDevice(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, res, err := alice.SendText(ctx, "one device again", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := sessions(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("after the 409 for an extra device alice has sessions with %v, want [1]", got)
	}
	if got := texts(receiveAll(t, bob)); strings.Join(got, ",") != "one device,two devices,one device again" {
		t.Errorf("bob's device 1 received %v", got)
	}
}

// TestLocalFailureIsNotAcknowledged: when the local store fails (here a
// session record that no longer opens), the envelope is not acknowledged,
// so it arrives again once the store is repaired.
func TestLocalFailureIsNotAcknowledged(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "first", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	receiveAll(t, bob)
	raw, err := sql.Open("sqlite", filepath.Join(bob.Dir(), "state.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var saved []byte
	var ref string // bob's only session, with alice (stored under a pseudonym)
	var n int
	if err := raw.QueryRow(`SELECT count(*) FROM sessions`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("bob has %d sessions (%v), want the one with alice", n, err)
	}
	if err := raw.QueryRow(`SELECT account_id, record FROM sessions`).Scan(&ref, &saved); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE sessions SET record = ? WHERE account_id = ?`, append(bytes.Clone(saved[:40]), 1), ref); err != nil {
		t.Fatal(err)
	}
	if _, res, err := alice.SendText(ctx, "second", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	var evs []Event
	err = bob.Receive(ctx, ReceiveOptions{Timeout: 300 * time.Millisecond, Handle: func(e Event) { evs = append(evs, e) }})
	if err == nil || !strings.Contains(err.Error(), "local database") || len(evs) != 0 {
		t.Fatalf("receive with a broken store: %v, events %+v", err, evs)
	}
	if _, err := raw.Exec(`UPDATE sessions SET record = ? WHERE account_id = ?`, saved, ref); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(texts(receiveAll(t, bob)), ","); got != "second" {
		t.Fatalf("after repair bob received %q", got)
	}
}
