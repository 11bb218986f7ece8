package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/vault"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// A provisioning message whose contacts, groups or conversations are
// malformed is refused whole: nothing of it is stored.
func TestAdoptProvisionedRefusesMalformed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key, err := vault.Create(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := clientdb.Open(ctx, filepath.Join(dir, "state.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	kp, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const self = "00000000-0000-4000-8000-000000000001"
	good := provisionedContact{Account: "00000000-0000-4000-8000-000000000002", Number: "+15555550199", IdentityKey: kp.Public.Bytes(), Trust: clientdb.TrustedVerified}
	group := Group{ID: "AAAAAAAAAAAAAAAAAAAAAA", Name: "g", Revision: 1, Active: true,
		Members: []content.GroupMember{{Account: good.Account, Number: good.Number}}}
	with := func(f func(m *provisionMessage)) provisionMessage {
		m := provisionMessage{AccountID: self, Contacts: []provisionedContact{good}, Groups: []Group{group},
			Conversations: []provisionedConversation{{ID: good.Account, Timer: 60}}}
		f(&m)
		return m
	}
	for name, m := range map[string]provisionMessage{
		"our own account":    with(func(m *provisionMessage) { m.Contacts[0].Account = self }),
		"empty account":      with(func(m *provisionMessage) { m.Contacts[0].Account = "" }),
		"long account":       with(func(m *provisionMessage) { m.Contacts[0].Account = strings.Repeat("a", 65) }),
		"bad number":         with(func(m *provisionMessage) { m.Contacts[0].Number = "555" }),
		"bad identity key":   with(func(m *provisionMessage) { m.Contacts[0].IdentityKey = []byte{5, 1, 2} }),
		"trust out of range": with(func(m *provisionMessage) { m.Contacts[0].Trust = 9 }),
		"group without id":   with(func(m *provisionMessage) { m.Groups[0].ID = "x" }),
		"group revision 0":   with(func(m *provisionMessage) { m.Groups[0].Revision = 0 }),
		"negative timer":     with(func(m *provisionMessage) { m.Conversations[0].Timer = -1 }),
		"huge timer":         with(func(m *provisionMessage) { m.Conversations[0].Timer = content.MaxExpireTimer + 1 }),
		"short bucket secret": with(func(m *provisionMessage) {
			m.Conversations[0].BucketID, m.Conversations[0].MemberSecret = "AAAAAAAAAAAAAAAAAAAAAA", []byte{1}
		}),
		"too many contacts": with(func(m *provisionMessage) { m.Contacts = make([]provisionedContact, maxProvisionedContacts+1) }),
	} {
		err := db.Update(ctx, func(tx *clientdb.Tx) error { return adoptProvisioned(ctx, tx, m) })
		if err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	err = db.Update(ctx, func(tx *clientdb.Tx) error {
		rs, err := tx.Recipients(ctx)
		if err != nil || len(rs) != 0 {
			t.Errorf("recipients stored from refused messages: %v, %v", rs, err)
		}
		ids, err := tx.GroupIDs(ctx)
		if err != nil || len(ids) != 0 {
			t.Errorf("groups stored from refused messages: %v, %v", ids, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The well-formed message is stored.
	if err := db.Update(ctx, func(tx *clientdb.Tx) error { return adoptProvisioned(ctx, tx, with(func(*provisionMessage) {})) }); err != nil {
		t.Fatal(err)
	}
}

// An account too large to hand over whole still links: the message goes
// without its contacts and groups, within the relay's limit.
func TestSealProvisioningDropsWhatDoesNotFit(t *testing.T) {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := provisionMessage{Version: provisionVersion, AccountID: "a", Number: "+15555550100", LinkCode: "c"}
	for i := range 3000 {
		m.Contacts = append(m.Contacts, provisionedContact{Account: fmt.Sprintf("%036d", i), Number: "+15555550100", IdentityKey: make([]byte, 33)})
	}
	for _, c := range []struct {
		contacts int
		dropped  bool
	}{{10, false}, {3000, true}} {
		mm := m
		mm.Contacts = m.Contacts[:c.contacts]
		sealed, dropped, err := sealProvisioning(mm, pub)
		if err != nil || dropped != c.dropped || len(sealed) > wire.MaxProvisioningBody {
			t.Fatalf("%d contacts: %d bytes, dropped %v, %v", c.contacts, len(sealed), dropped, err)
		}
		plain, ok := box.OpenAnonymous(nil, sealed, pub, priv)
		var got provisionMessage
		if !ok || json.Unmarshal(plain, &got) != nil || got.LinkCode != "c" || (len(got.Contacts) == 0) != c.dropped {
			t.Errorf("%d contacts: opened %v, %d contacts", c.contacts, ok, len(got.Contacts))
		}
	}
}
