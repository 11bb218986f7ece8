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

	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/store/clientdb"
)

// provisionMessage is what the primary device seals to a new device: who
// the account is, its identity key pair, and the code that lets the new
// device join.
type provisionMessage struct {
	Version         int    `json:"version"`
	AccountID       string `json:"account_id"`
	Number          string `json:"number"`
	IdentityPrivate []byte `json:"identity_private"`
	LinkCode        string `json:"link_code"`
}

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
	rc, err := relayclient.New(server)
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
		return errors.Join(tx.SetValue(ctx, metaServer, []byte(a.Server), false), saveDevice(ctx, tx, m.AccountID, device, regID, cred, ik))
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
	plain, err := json.Marshal(provisionMessage{Version: provisionVersion, AccountID: a.ID, Number: a.Number,
		IdentityPrivate: a.identity.Private.Bytes(), LinkCode: code})
	if err != nil {
		return err
	}
	sealed, err := box.SealAnonymous(nil, plain, pub, rand.Reader)
	if err != nil {
		return err
	}
	if err := a.relay.DeliverProvisioning(ctx, address, sealed); err != nil {
		return err
	}
	a.ownDevicesAt = time.Time{} // look again before the next sync
	return nil
}
