package cli

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// provisionMessage is what the primary device seals to a new device: who
// the account is, its identity key pair, the code that lets the new device
// join, and what the new device needs to carry on the account's
// conversations (contacts with the trust given to their keys, groups,
// timers and attachment buckets). Message history and sessions stay
// behind: the new device starts its own sessions.
type provisionMessage struct {
	Version         int                       `json:"version"`
	AccountID       string                    `json:"account_id"`
	Number          string                    `json:"number"`
	IdentityPrivate []byte                    `json:"identity_private"`
	LinkCode        string                    `json:"link_code"`
	Contacts        []provisionedContact      `json:"contacts,omitempty"`
	Groups          []Group                   `json:"groups,omitempty"`
	Conversations   []provisionedConversation `json:"conversations,omitempty"`
	// ProfileKey and TrustRoot are the account's sealed-sender state: its
	// profile key (every device shares it) and the pinned operator root.
	ProfileKey []byte `json:"profile_key,omitempty"`
	TrustRoot  []byte `json:"trust_root,omitempty"`
}

// provisionedContact is a contact as the primary device knows it.
type provisionedContact struct {
	Account     string `json:"account"`
	Number      string `json:"number,omitempty"`
	IdentityKey []byte `json:"identity_key,omitempty"`
	Trust       int    `json:"trust"`
	KeyAddedMS  int64  `json:"key_added_ms,omitempty"`
	ProfileKey  []byte `json:"profile_key,omitempty"`
}

// provisionedConversation is a conversation's timer and attachment
// bucket; ID is a contact's account id or a group id.
type provisionedConversation struct {
	ID           string `json:"id"`
	Timer        int64  `json:"timer,omitempty"`
	BucketID     string `json:"bucket_id,omitempty"`
	MemberSecret []byte `json:"member_secret,omitempty"`
	AdminSecret  []byte `json:"admin_secret,omitempty"`
}

// maxProvisionedContacts bounds what a provisioning message may carry.
const maxProvisionedContacts = 10000

const provisionVersion = 1

// linkURI is what the new device shows (as a QR code and as text): where
// its provisioning message goes and the X25519 key it is sealed to.
func linkURI(address string, pub *[32]byte) string {
	q := url.Values{}
	q.Set("address", address)
	q.Set("pub_key", base64.RawURLEncoding.EncodeToString(pub[:]))
	return "parley://link?" + q.Encode()
}

// parseLinkURI returns the address and public key of a link URI.
func parseLinkURI(s string) (string, *[32]byte, error) {
	bad := fmt.Errorf("%w: not a parley link URI (parley://link?address=…&pub_key=…)", ErrUsage)
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "parley" || u.Host != "link" {
		return "", nil, bad
	}
	q := u.Query()
	address := q.Get("address")
	key, err := base64.RawURLEncoding.DecodeString(q.Get("pub_key"))
	if err != nil || len(key) != 32 || address == "" || len(address) > 64 {
		return "", nil, bad
	}
	// A low-order or otherwise unusable X25519 point is refused here
	// rather than sealing the identity key to it.
	if _, err := ecdh.X25519().NewPublicKey(key); err != nil {
		return "", nil, bad
	}
	var pub [32]byte
	copy(pub[:], key)
	return address, &pub, nil
}

// Link makes this machine a linked device of an existing account. It opens
// the relay's provisioning socket, passes show the link URI to display
// (for `addDevice --uri` on the primary device), waits for the primary's
// sealed provisioning message, and registers this device with fresh keys
// under the account's identity. o.Number is ignored: the account's number
// comes in the message.
func Link(ctx context.Context, o Options, show func(uri string)) (*Account, error) {
	server := o.Server
	if server == "" {
		server = DefaultServer
	}
	rc, err := newRelayClient(server, o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sock, err := rc.WaitForProvisioning(ctx)
	if err != nil {
		return nil, err
	}
	defer sock.Close()
	show(linkURI(sock.Address, pub))
	sealed, err := sock.Message(ctx)
	if err != nil {
		return nil, err
	}
	plain, ok := box.OpenAnonymous(nil, sealed, pub, priv)
	if !ok {
		return nil, errors.New("the provisioning message does not open with this device's key")
	}
	var m provisionMessage
	if err := json.Unmarshal(plain, &m); err != nil || m.Version != provisionVersion || m.AccountID == "" || m.LinkCode == "" {
		return nil, errors.New("the provisioning message is malformed or from an incompatible version")
	}
	n, err := phone.Parse(m.Number)
	if err != nil {
		return nil, fmt.Errorf("provisioning message: %w", err)
	}
	ik, err := identityFromPrivate(m.IdentityPrivate)
	if err != nil {
		return nil, fmt.Errorf("provisioning message: %w", err)
	}
	o.Number, o.Server = n.String(), server
	a, err := open(ctx, o, true)
	if err != nil {
		return nil, err
	}
	if a.Registered() {
		return nil, errors.Join(fmt.Errorf("%w: %s already has an account in %s", ErrUsage, a.Number, o.Dir), a.Close())
	}
	if err := a.link(ctx, m, ik); err != nil {
		return nil, errors.Join(err, a.Close())
	}
	return a, nil
}

// link registers this device with the relay and stores the account.
func (a *Account) link(ctx context.Context, m provisionMessage, ik protocol.IdentityKeyPair) error {
	cred := newCredential()
	regID := newRegistrationID()
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		k, err := newDeviceKeys(ctx, tx, ik, a.now())
		if err != nil {
			return err
		}
		device, err := a.relay.LinkDevice(ctx, relayclient.Link{
			AccountID: m.AccountID, Code: m.LinkCode, Credential: cred, RegistrationID: regID,
			SignedPreKey: k.SignedPreKey, PQLastResortKey: k.LastResort, PreKeys: k.PreKeys, PQPreKeys: k.PQPreKeys,
		})
		if err != nil {
			return err
		}
		if err := errors.Join(tx.SetValue(ctx, metaServer, []byte(a.Server), false), saveDevice(ctx, tx, m.AccountID, device, regID, cred, ik)); err != nil {
			return err
		}
		return adoptProvisioned(ctx, tx, m)
	})
	if err != nil {
		return err
	}
	return a.load(ctx, a.Server)
}

// AddDevice approves a new device showing uri (from `parley link`): it
// gets a one-time link code from the relay and sends the device the
// account's identity key pair and that code, sealed to the device's key.
// Only the primary device may add devices.
func (a *Account) AddDevice(ctx context.Context, uri string) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	address, pub, err := parseLinkURI(uri)
	if err != nil {
		return err
	}
	if a.DeviceID != 1 {
		return fmt.Errorf("%w: only the primary device (device 1) can add devices", ErrUsage)
	}
	code, err := a.relay.LinkCode(ctx)
	if err != nil {
		return err
	}
	m := provisionMessage{Version: provisionVersion, AccountID: a.ID, Number: a.Number,
		IdentityPrivate: a.identity.Private.Bytes(), LinkCode: code}
	if err := local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return a.provisioned(ctx, tx, &m) })); err != nil {
		return err
	}
	sealed, dropped, err := sealProvisioning(m, pub)
	if err != nil {
		return err
	}
	if dropped && a.notice != nil {
		a.notice(fmt.Sprintf("%d contacts and %d groups are too many to hand to the new device (the relay takes %d KiB); it starts without them and learns them as messages arrive",
			len(m.Contacts), len(m.Groups), wire.MaxProvisioningBody>>10))
	}
	if err := a.relay.DeliverProvisioning(ctx, address, sealed); err != nil {
		return err
	}
	a.ownDevicesAt = time.Time{} // look again before the next sync
	return nil
}

// sealProvisioning encodes m and seals it to the new device's key. If
// that is larger than the relay takes, it seals m without its contacts,
// groups and conversations instead and reports that they were dropped.
func sealProvisioning(m provisionMessage, pub *[32]byte) (sealed []byte, dropped bool, err error) {
	for {
		plain, err := json.Marshal(m)
		if err != nil {
			return nil, false, err
		}
		sealed, err := box.SealAnonymous(nil, plain, pub, rand.Reader)
		if err != nil || len(sealed) <= wire.MaxProvisioningBody || dropped {
			return sealed, dropped, err
		}
		m.Contacts, m.Groups, m.Conversations, dropped = nil, nil, nil, true
	}
}

// provisioned fills m with this device's contacts, groups and
// conversation settings.
func (a *Account) provisioned(ctx context.Context, tx *clientdb.Tx, m *provisionMessage) error {
	rs, err := tx.Recipients(ctx)
	if err != nil {
		return err
	}
	conversations := []string{}
	for _, r := range rs {
		if r.Account == a.ID {
			continue
		}
		pk, err := tx.ProfileKey(ctx, r.Account)
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
			return err
		}
		m.Contacts = append(m.Contacts, provisionedContact{Account: r.Account, Number: r.Number,
			IdentityKey: r.IdentityKey, Trust: r.Trust, KeyAddedMS: r.KeyAddedMS, ProfileKey: pk})
		conversations = append(conversations, r.Account)
	}
	if m.Groups, err = loadGroups(ctx, tx); err != nil {
		return err
	}
	if m.ProfileKey, err = tx.Value(ctx, metaProfileKey); err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return err
	}
	if m.TrustRoot, err = tx.Value(ctx, metaTrustRoot); err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return err
	}
	for _, g := range m.Groups {
		conversations = append(conversations, g.ID)
	}
	for _, id := range conversations {
		c := provisionedConversation{ID: id}
		if c.Timer, err = tx.Timer(ctx, id); err != nil {
			return err
		}
		b, err := tx.Bucket(ctx, id)
		switch {
		case err == nil:
			c.BucketID, c.MemberSecret, c.AdminSecret = b.ID, b.MemberSecret, b.AdminSecret
		case !errors.Is(err, clientdb.ErrNotFound):
			return err
		}
		if c.Timer != 0 || c.BucketID != "" {
			m.Conversations = append(m.Conversations, c)
		}
	}
	return nil
}

// adoptProvisioned stores what a provisioning message carries besides the
// account itself. Anything malformed refuses the whole message: it came
// from this account's primary device, so it should not be.
func adoptProvisioned(ctx context.Context, tx *clientdb.Tx, m provisionMessage) error {
	bad := func(what string) error { return fmt.Errorf("the provisioning message has a malformed %s", what) }
	if len(m.Contacts) > maxProvisionedContacts || len(m.Groups) > maxProvisionedContacts || len(m.Conversations) > 2*maxProvisionedContacts {
		return bad("size")
	}
	for _, c := range m.Contacts {
		if c.Account == "" || len(c.Account) > 64 || c.Account == m.AccountID || c.Trust < clientdb.Untrusted || c.Trust > clientdb.TrustedVerified {
			return bad("contact")
		}
		if c.Number != "" {
			if _, err := phone.Parse(c.Number); err != nil {
				return bad("contact number")
			}
		}
		if c.IdentityKey != nil {
			if _, err := protocol.ParsePublicKey(c.IdentityKey); err != nil {
				return bad("contact identity key")
			}
		}
		if err := tx.PutRecipient(ctx, clientdb.Recipient{Account: c.Account, Number: c.Number,
			IdentityKey: c.IdentityKey, Trust: c.Trust, KeyAddedMS: c.KeyAddedMS}); err != nil {
			return err
		}
		if c.ProfileKey != nil {
			if len(c.ProfileKey) != protocol.ProfileKeySize {
				return bad("contact profile key")
			}
			if err := tx.SetProfileKey(ctx, c.Account, c.ProfileKey); err != nil {
				return err
			}
		}
	}
	if m.ProfileKey != nil {
		if len(m.ProfileKey) != protocol.ProfileKeySize {
			return bad("profile key")
		}
		if err := tx.SetValue(ctx, metaProfileKey, m.ProfileKey, true); err != nil {
			return err
		}
		// The primary published the access key; this device need not.
		if err := tx.SetValue(ctx, metaAccessKeyPublished, []byte("1"), false); err != nil {
			return err
		}
	}
	if m.TrustRoot != nil {
		if _, err := protocol.ParsePublicKey(m.TrustRoot); err != nil {
			return bad("trust root")
		}
		if err := tx.SetValue(ctx, metaTrustRoot, m.TrustRoot, false); err != nil {
			return err
		}
	}
	for _, g := range m.Groups {
		if !g.state().Valid() {
			return bad("group")
		}
		if err := saveGroup(ctx, tx, g); err != nil {
			return err
		}
	}
	for _, c := range m.Conversations {
		if c.ID == "" || len(c.ID) > 64 || c.Timer < 0 || c.Timer > content.MaxExpireTimer {
			return bad("conversation")
		}
		if c.Timer > 0 {
			if _, err := tx.SetTimer(ctx, c.ID, c.Timer); err != nil {
				return err
			}
		}
		if c.BucketID != "" {
			if _, err := tx.AdoptBucket(ctx, c.ID, clientdb.Bucket{ID: c.BucketID, MemberSecret: c.MemberSecret, AdminSecret: c.AdminSecret}); err != nil {
				return bad("attachment bucket")
			}
		}
	}
	return nil
}
