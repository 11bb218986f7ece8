package cli

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite"

	"github.com/parleyhq/parley/api/apitest"
	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/sealedsender"
)

// startSealedRelay is startRelayIn with sealed sender configured: a trust
// root and a server certificate made by parleyd's own commands. It returns
// the relay's URL, its data directory and the root's public key; the
// server certificate file is serverCertFile(data).
func startSealedRelay(t *testing.T) (string, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	root, cert := filepath.Join(dir, "root.json"), filepath.Join(dir, "server-cert.json")
	for _, args := range [][]string{{"trust-root", "--out", root}, {"server-certificate", "--trust-root", root, "--key-id", "1", "--out", cert}} {
		if out, err := exec.Command(parleyd, args...).CombinedOutput(); err != nil {
			t.Fatalf("parleyd %v: %v\n%s", args, err, out)
		}
	}
	raw, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		PublicKey []byte `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.PublicKey) != 33 {
		t.Fatalf("trust root file: %v", err)
	}
	data := filepath.Join(dir, "data")
	s, err := bench.Spawn(parleyd, dir, 10, testCode, nil, "--data-dir", data, "--sender-certificate-file", cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return apitest.ValidatingProxy(t, s.Base), data, r.PublicKey
}

// serverCertFile is the server certificate file of the relay whose data
// directory is data.
func serverCertFile(data string) string { return filepath.Join(filepath.Dir(data), "server-cert.json") }

// sourcelessEnvelopes counts the envelopes the relay holds without a source.
func sourcelessEnvelopes(t *testing.T, data string) (sealed, identified int) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "parley.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*) FILTER (WHERE source_account IS NULL AND source_device IS NULL), count(*) FILTER (WHERE source_account IS NOT NULL) FROM envelopes`).Scan(&sealed, &identified); err != nil {
		t.Fatal(err)
	}
	return sealed, identified
}

// TestSealedSender: once two people have written to each other, their
// messages (and receipts) travel sealed: the relay stores them with no
// source, and the receiver knows the sender from the certificate. A stale
// access key falls back to an identified send.
func TestSealedSender(t *testing.T) {
	ctx := context.Background()
	server, data, _ := startSealedRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)

	// Alice holds no profile key of Bob's yet: identified.
	if _, res, err := alice.SendText(ctx, "hello", bob.Number); err != nil || res[0].Err != nil {
		t.Fatalf("send: %v %v", err, res)
	}
	if sealed, identified := sourcelessEnvelopes(t, data); sealed != 0 || identified != 1 {
		t.Fatalf("first message: %d sealed, %d identified", sealed, identified)
	}
	evs := receiveAll(t, bob)
	if len(evs) != 1 || evs[0].Sealed || evs[0].Text != "hello" {
		t.Fatalf("bob received %+v", evs)
	}
	// Bob learned Alice's profile key from it: his reply, and the
	// delivery receipt he sent, go sealed.
	if _, res, err := bob.SendText(ctx, "hi back", alice.Number); err != nil || res[0].Err != nil {
		t.Fatalf("reply: %v %v", err, res)
	}
	if sealed, _ := sourcelessEnvelopes(t, data); sealed != 2 {
		t.Fatalf("%d sealed envelopes after bob's receipt and reply, want 2", sealed)
	}
	evs = receiveAll(t, alice)
	var sawReply, sawReceipt bool
	for _, e := range evs {
		switch {
		case e.Kind == "message" && e.Text == "hi back":
			sawReply = e.Sealed && e.Sender == bob.Number && e.SenderAccount == bob.ID && e.SenderDevice == 1
		case e.Kind == "receipt":
			sawReceipt = e.Sealed && e.SenderAccount == bob.ID
		}
	}
	if !sawReply || !sawReceipt {
		t.Fatalf("alice received %+v", evs)
	}
	// Now Alice has Bob's key too.
	if _, res, err := alice.SendText(ctx, "sealed now", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if m := messagesIn(receiveAll(t, bob)); len(m) != 1 || !m[0].Sealed || m[0].Text != "sealed now" || m[0].Sender != alice.Number {
		t.Fatalf("bob received %+v", m)
	}
	receiveAll(t, alice) // the receipt

	// A stale profile key: the relay refuses the access key with 401 and
	// the message goes identified instead, once.
	stale := make([]byte, protocol.ProfileKeySize)
	rand.Read(stale)
	if err := alice.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.SetProfileKey(ctx, bob.ID, stale) }); err != nil {
		t.Fatal(err)
	}
	if _, res, err := alice.SendText(ctx, "after a stale key", bob.Number); err != nil || res[0].Err != nil {
		t.Fatalf("send with a stale key: %v %v", err, res)
	}
	if m := messagesIn(receiveAll(t, bob)); len(m) != 1 || m[0].Sealed || m[0].Text != "after a stale key" {
		t.Fatalf("bob received %+v", m)
	}
	// Bob lets anyone send him sealed messages: the stale key is admitted.
	if err := bob.SetUnrestrictedUnidentifiedAccess(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, res, err := alice.SendText(ctx, "unrestricted", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if m := messagesIn(receiveAll(t, bob)); len(m) != 1 || !m[0].Sealed || m[0].Text != "unrestricted" {
		t.Fatalf("bob received %+v", m)
	}
}

// messagesIn keeps the message events (receipts also arrive).
func messagesIn(evs []Event) []Event {
	var out []Event
	for _, e := range evs {
		if e.Kind == "message" {
			out = append(out, e)
		}
	}
	return out
}

// TestTrustRootPinned: an account told to pin another trust root than the
// relay's refuses it at registration; one that pinned the relay's keeps it
// (a relay that later shows another root is refused).
func TestTrustRootPinned(t *testing.T) {
	ctx := context.Background()
	server, _, root := startSealedRelay(t)
	other, _ := protocol.GenerateKeyPair(rand.Reader)
	a, _, err := Register(ctx, Options{Dir: t.TempDir(), Number: bench.Number(2), Server: server, TrustRoot: other.Public.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Verify(ctx, testCode, ""); !errors.Is(err, ErrTrustRootChanged) {
		t.Fatalf("verify with another root pinned: %v", err)
	}
	b, _, err := Register(ctx, Options{Dir: t.TempDir(), Number: bench.Number(3), Server: server, TrustRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Verify(ctx, testCode, ""); err != nil {
		t.Fatalf("verify with the relay's root given: %v", err)
	}
	if b.sealed.root == nil || !b.sealed.root.Equal(mustKey(t, root)) || b.sealed.profileKey == nil {
		t.Fatalf("sealed state after registration: %+v", b.sealed.root)
	}
}

func mustKey(t *testing.T, b []byte) protocol.PublicKey {
	t.Helper()
	k, err := protocol.ParsePublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealedGroupMessage: a group message goes sealed to every member
// whose profile key the sender holds (one sealed copy per member) and
// identified to the others; members decrypt both alike.
func TestSealedGroupMessage(t *testing.T) {
	ctx := context.Background()
	server, data, _ := startSealedRelay(t)
	alice, bob, carol := newAccount(t, server, 0), newAccount(t, server, 1), newAccount(t, server, 2)
	// Bob writes to Alice: she learns his profile key. Carol never does.
	if _, res, err := bob.SendText(ctx, "hi alice", alice.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	receiveAll(t, alice)
	name := "Sealed crew"
	g, _, err := alice.UpdateGroup(ctx, GroupChange{Name: &name, Add: []string{bob.Number, carol.Number}})
	if err != nil {
		t.Fatal(err)
	}
	receiveAll(t, bob)
	receiveAll(t, carol)
	before, _ := sourcelessEnvelopes(t, data)
	if _, err := alice.SendGroup(ctx, g.ID, "to the crew", nil); err != nil {
		t.Fatal(err)
	}
	after, _ := sourcelessEnvelopes(t, data)
	if after-before != 2 {
		t.Errorf("%d sealed envelopes, want 2: bob's copy of the group message and of alice's group key before it", after-before)
	}
	for _, c := range []struct {
		who    *Account
		sealed bool
	}{{bob, true}, {carol, false}} {
		m := messagesIn(receiveAll(t, c.who))
		if len(m) != 1 || m[0].Text != "to the crew" || m[0].Group != g.ID || m[0].Sealed != c.sealed || m[0].SenderAccount != alice.ID {
			t.Errorf("%s received %+v", c.who.Number, m)
		}
	}
}

// TestSealedBadCertificate: a sealed envelope whose certificate another
// operator signed, or that had expired when the relay took it, is an
// error event, never a message, and leaves the session able to take the
// next genuine one.
func TestSealedBadCertificate(t *testing.T) {
	ctx := context.Background()
	server, data, _ := startSealedRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "hello", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	receiveAll(t, bob)
	receiveAll(t, alice)
	rogueRoot, _ := protocol.GenerateKeyPair(rand.Reader)
	rogueServer, _ := protocol.GenerateKeyPair(rand.Reader)
	rogueCert, _ := protocol.NewServerCertificate(rand.Reader, 1, rogueServer.Public, rogueRoot.Private)
	real, err := bob.senderCertificate(ctx)
	if err != nil || real == nil {
		t.Fatalf("bob's certificate: %v", err)
	}
	access, err := bob.accessKeyFor(ctx, clientdb.Recipient{Account: alice.ID})
	if err != nil || access == nil {
		t.Fatalf("alice's access key: %v", err)
	}
	sendWith := func(cert *protocol.SenderCertificate, text string) {
		t.Helper()
		c := &content.Content{Timestamp: bob.now().UnixMilli(), Text: text}
		pt, err := bob.marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		var reg uint32
		if err := bob.db.Update(ctx, func(tx *clientdb.Tx) error {
			st := bob.store(tx)
			rec, err := st.LoadSession(ctx, address(alice.ID, 1))
			if err != nil {
				return err
			}
			reg = uint32(rec.RemoteRegistrationID())
			body, err = protocol.SealedSenderEncrypt(ctx, rand.Reader, st, address(alice.ID, 1), cert, pt, st.now)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.relay.SendSealed(ctx, alice.ID, relayclient.Send{Timestamp: c.Timestamp, Messages: []relayclient.Outgoing{
			{DeviceID: 1, RegistrationID: reg, Type: EnvelopeSealed, Content: body}}}, "", access); err != nil {
			t.Fatal(err)
		}
	}
	// The relay's own server key, to issue certificates at chosen times.
	key, err := sealedsender.LoadServerKey(serverCertFile(data))
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := sealedsender.NewIssuer(key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issued := func(at time.Time) *protocol.SenderCertificate {
		t.Helper()
		raw, _, err := issuer.Issue(uuid.MustParse(bob.ID), 1, bob.identity.Public.Bytes(), at)
		if err != nil {
			t.Fatal(err)
		}
		c, err := protocol.ParseSenderCertificate(raw)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	forged, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: bob.ID, SenderDevice: 1,
		Expires: time.Now().Add(time.Hour), IdentityKey: bob.identity.Public, Signer: rogueCert}, rogueServer.Private)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cert *protocol.SenderCertificate
	}{
		{"another operator", forged},
		{"expired when the relay took it", issued(time.Now().Add(-2 * time.Hour))},
	} {
		sendWith(c.cert, "refused: "+c.name)
		evs := receiveAll(t, alice)
		if len(evs) != 1 || evs[0].Kind != "error" || evs[0].Text != "" {
			t.Fatalf("%s: alice got %+v", c.name, evs)
		}
	}
	// Current when the relay took it, expired by the time alice reads it
	// (she was offline): accepted, as Signal's clients do.
	sendWith(issued(time.Now().Add(-time.Hour+1500*time.Millisecond)), "queued while she was away")
	time.Sleep(2 * time.Second)
	if m := messagesIn(receiveAll(t, alice)); len(m) != 1 || m[0].Text != "queued while she was away" || !m[0].Sealed {
		t.Fatalf("a message queued before its certificate expired: %+v", m)
	}
	sendWith(real, "genuine")
	if m := messagesIn(receiveAll(t, alice)); len(m) != 1 || m[0].Text != "genuine" || !m[0].Sealed {
		t.Fatalf("the genuine message after the forged one: %+v", m)
	}
}
