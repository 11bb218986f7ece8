package main_test

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/internal/libsignalpeer"
)

// sealedSenderFiles makes an operator trust root and a server certificate
// with parleyd's commands, and returns the flag that turns sealed sender on
// and the root's public key.
func sealedSenderFiles(t *testing.T) (flags []string, root []byte) {
	t.Helper()
	dir := t.TempDir()
	rootFile, cert := filepath.Join(dir, "root.json"), filepath.Join(dir, "server-cert.json")
	if out, err := execOut(parleydBin, "trust-root", "--out", rootFile); err != nil {
		t.Fatalf("trust-root: %v %s", err, out)
	}
	if out, err := execOut(parleydBin, "server-certificate", "--trust-root", rootFile, "--key-id", "7", "--out", cert); err != nil {
		t.Fatalf("server-certificate: %v %s", err, out)
	}
	raw, _ := os.ReadFile(rootFile)
	var r struct {
		PublicKey []byte `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return []string{"--sender-certificate-file", cert}, r.PublicKey
}

// TestSealedSenderCLI: two parley users on a relay with sealed sender:
// once each holds the other's profile key (from the first messages), what
// they send arrives sealed, and receive --json says so.
func TestSealedSenderCLI(t *testing.T) {
	flags, _ := sealedSenderFiles(t)
	server := relay(t, "sqlite", flags...)
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "first, identified", bob.number)
	if out := bob.ok("receive", "--json", "--timeout", "0.5"); strings.Contains(out, `"sealed":true`) || !strings.Contains(out, "first, identified") {
		t.Fatalf("bob's first receive:\n%s", out)
	}
	if _, errs, code := bob.run("", "updateAccount", "--unrestricted-unidentified-sender", "maybe"); code != 1 || !strings.Contains(errs, "true|false") {
		t.Errorf("updateAccount with a bad value: exit %d %s", code, errs)
	}
	bob.ok("updateAccount", "--unrestricted-unidentified-sender", "false")
	bob.ok("send", "-m", "second, sealed", alice.number)
	out := alice.ok("receive", "--json", "--timeout", "0.5")
	var found bool
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Type   string `json:"type"`
			Text   string `json:"text"`
			Sender string `json:"sender"`
			Sealed bool   `json:"sealed"`
		}
		json.Unmarshal([]byte(l), &ev)
		if ev.Type == "message" {
			found = ev.Text == "second, sealed" && ev.Sealed && ev.Sender == bob.number
		}
	}
	if !found {
		t.Fatalf("alice's receive:\n%s", out)
	}
	// A device linked now gets the account's profile key and pinned root,
	// and Bob's profile key, from the primary: it sends sealed too, and
	// the copy its sibling gets goes identified (as Signal's do).
	laptop, _ := linkDevice(t, alice, server)
	laptop.ok("send", "-m", "from the laptop, sealed", bob.number)
	out = bob.ok("receive", "--json", "--timeout", "0.5")
	if !strings.Contains(out, `"text":"from the laptop, sealed"`) || !strings.Contains(out, `"sealed":true`) || !strings.Contains(out, `"sender_device":2`) {
		t.Fatalf("bob received from the laptop:\n%s", out)
	}
	if evs := alice.events(); !has(evs, syncEvent{Type: "sent", Sender: alice.number, Destination: bob.number, Text: "from the laptop, sealed"}) {
		t.Errorf("alice's phone did not get the laptop's copy: %+v", evs)
	}
}

// TestOfficialSealedSender: official libsignal and parley write to each
// other sealed through parleyd: each validates the other's sender
// certificate (issued by parleyd) against the operator's trust root.
func TestOfficialSealedSender(t *testing.T) {
	p := libsignalpeer.Start(t)
	flags, root := sealedSenderFiles(t)
	server := relay(t, "sqlite", flags...)
	alice := newUser(t, server, 0)
	alice.register()
	m := newMobile(t, p, server, 1, 3)
	m.trustRoot = root

	// The mobile shares its profile key in its first (identified) message.
	mobileKey := make([]byte, 32)
	rand.Read(mobileKey)
	mobileAccess, err := p.DeriveAccessKey(mobileKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.rc.SetUnidentifiedAccess(m.ctx(), mobileAccess, false); err != nil {
		t.Fatal(err)
	}
	m.send(m.lookup(alice.number), &content.Content{Timestamp: m.now(), SenderNumber: m.number, Text: "hi parley", ProfileKey: mobileKey})
	expect(t, "parley received", parleyTexts(t, alice.allEvents()), []string{m.number + ": hi parley"})

	// Parley holds it now: its reply is sealed, and official libsignal
	// validates parleyd's certificate for parley against the root.
	alice.ok("send", "-m", "sealed to libsignal", m.number)
	var aliceKey []byte
	sealed := false
	for _, r := range m.receive() {
		if r.err != nil {
			t.Fatalf("mobile: %v", r.err)
		}
		if r.content.Text == "sealed to libsignal" {
			sealed = r.sealed && r.env.Type == envSealed && r.from.Name == m.lookup(alice.number)
			aliceKey = r.content.ProfileKey
		}
	}
	if !sealed || len(aliceKey) != 32 {
		t.Fatalf("parley's reply: sealed %v, profile key %d bytes", sealed, len(aliceKey))
	}

	// The mobile writes sealed with parleyd's certificate for it and
	// parley's access key; parley validates the certificate.
	cert, _, err := m.rc.SenderCertificate(m.ctx())
	if err != nil {
		t.Fatal(err)
	}
	access, err := p.DeriveAccessKey(aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := content.Marshal(&content.Content{Timestamp: m.now(), SenderNumber: m.number, Text: "sealed to parley", ProfileKey: mobileKey})
	to := m.lookup(alice.number)
	body, err := p.SealedEncrypt(m.client, libsignalpeer.Address{Name: to, DeviceID: 1}, cert, pt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.rc.SendSealed(m.ctx(), to, relayclient.Send{Timestamp: m.now(), Urgent: true, Messages: []relayclient.Outgoing{
		{DeviceID: 1, RegistrationID: m.session(to, 1).RemoteRegistrationID, Type: envSealed, Content: body}}}, "", access); err != nil {
		t.Fatalf("sealed send: %v", err)
	}
	out := alice.ok("receive", "--json", "--timeout", "0.5")
	if !strings.Contains(out, `"text":"sealed to parley"`) || !strings.Contains(out, `"sealed":true`) || !strings.Contains(out, `"sender":"`+m.number+`"`) {
		t.Fatalf("parley received:\n%s", out)
	}
}
