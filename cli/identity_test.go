package cli

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// TestForgedOwnDevice: a message that claims to come from another device of
// our own account but is encrypted under a different identity key (what a
// malicious relay could forge: it chooses the source it reports) is refused,
// so nobody can inject "sent" copies or group updates in our name.
func TestForgedOwnDevice(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	b, err := alice.relay.Bundles(ctx, bob.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	ik, _ := parseIdentityKey(b.IdentityKey)
	pb, err := bundle(b.Devices[0], ik)
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := protocol.GenerateKeyPair(rand.Reader)
	st := protocol.NewMemoryStore(forger, 4242)
	self := protocol.Address{Name: bob.ID, DeviceID: 2} // claims to be bob's second device
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, st, self, address(bob.ID, 1), pb, time.Now()); err != nil {
		t.Fatal(err)
	}
	pt, _ := content.Marshal(&content.Content{Timestamp: time.Now().UnixMilli(), Text: "forged"})
	m, err := protocol.Encrypt(ctx, rand.Reader, st, self, address(bob.ID, 1), pt, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	env := &wire.Envelope{ID: uuid.New(), Type: int(m.Type), SourceAccount: uuid.MustParse(bob.ID), SourceDevice: 2,
		Timestamp: time.Now().UnixMilli(), Content: m.Bytes}
	ev, _, err := bob.process(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "error" || !strings.Contains(ev.Error, "untrusted identity") {
		t.Fatalf("a message in our own name under another key: %+v", ev)
	}
}
