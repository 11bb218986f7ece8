package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// Sealed sender: once the relay has an operator trust root, parley pins it
// (given with --trust-root, or learned at registration and kept), shares
// its profile key inside its messages, and sends sealed (envelope type 6,
// no sender the relay can see) to everyone whose profile key it holds,
// falling back to an ordinary send when the relay refuses the key or has
// no sealed sender. Received sealed envelopes are believed only when their
// sender certificate chains to the pinned root, is current, and names the
// identity key the message uses.

// Meta keys of the sealed-sender state.
const (
	metaProfileKey         = "profile_key" // sealed
	metaTrustRoot          = "trust_root"
	metaAccessKeyPublished = "access_key_published"
)

// EnvelopeSealed is a sealed-sender envelope: its sender is inside.
const EnvelopeSealed = 6

// primaryDevice is the device that makes the account's profile key.
const primaryDevice = 1

// certificateRefresh is how long before expiry a sender certificate is
// replaced.
const certificateRefresh = time.Hour

// ErrTrustRootChanged reports a relay whose sealed-sender trust root is
// not the one this account pinned.
var ErrTrustRootChanged = errors.New("the relay's sealed-sender trust root is not the one this account pinned")

// sealedState is the account's sealed-sender state in memory.
type sealedState struct {
	mu         sync.Mutex
	profileKey []byte
	root       *protocol.PublicKey // nil: none pinned (sealed sender off)
	cert       *protocol.SenderCertificate
}

// read loads the sealed-sender state with the account.
func (s *sealedState) read(ctx context.Context, tx *clientdb.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pk, err := tx.Value(ctx, metaProfileKey)
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return err
	}
	s.profileKey = pk
	root, err := tx.Value(ctx, metaTrustRoot)
	switch {
	case errors.Is(err, clientdb.ErrNotFound):
		s.root = nil
	case err != nil:
		return err
	default:
		k, err := protocol.ParsePublicKey(root)
		if err != nil {
			return fmt.Errorf("pinned trust root: %w", err)
		}
		s.root = &k
	}
	return nil
}

// SetupSealedSender makes this device ready for sealed sender: a profile
// key (made once per account, shared by its devices), the relay's trust
// root pinned (the one given in Options.TrustRoot, or the relay's at
// first use; a different one later is ErrTrustRootChanged), and the
// account's unidentified-access key published. A relay without sealed
// sender leaves it off. It runs after registration and with Maintain.
func (a *Account) SetupSealedSender(ctx context.Context) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	s := &a.sealed
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root == nil || a.trustRoot != nil {
		root, err := a.relay.TrustRoot(ctx)
		if relayclient.IsCode(err, "sealed_sender_disabled") {
			if a.trustRoot != nil {
				return fmt.Errorf("%w: the relay has no sealed sender, but a trust root was given", ErrUsage)
			}
			return nil
		}
		if err != nil {
			return err
		}
		k, err := protocol.ParsePublicKey(root)
		if err != nil {
			return fmt.Errorf("the relay's trust root: %w", err)
		}
		if (a.trustRoot != nil && !a.trustRoot.Equal(k)) || (s.root != nil && !s.root.Equal(k)) {
			return ErrTrustRootChanged
		}
		if s.root == nil {
			if err := a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.SetValue(ctx, metaTrustRoot, k.Bytes(), false) }); err != nil {
				return local(err)
			}
			s.root = &k
		}
	}
	if s.profileKey == nil && a.DeviceID != primaryDevice {
		return nil // linked devices get the account's profile key from the primary
	}
	if s.profileKey == nil {
		pk := make([]byte, protocol.ProfileKeySize)
		rand.Read(pk)
		if err := a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.SetValue(ctx, metaProfileKey, pk, true) }); err != nil {
			return local(err)
		}
		s.profileKey = pk
	}
	var published bool
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.Value(ctx, metaAccessKeyPublished)
		published = err == nil
		if errors.Is(err, clientdb.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return local(err)
	}
	if !published {
		key, err := protocol.DeriveAccessKey(s.profileKey)
		if err != nil {
			return err
		}
		if err := a.relay.SetUnidentifiedAccess(ctx, key, false); err != nil {
			return err
		}
		if err := a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.SetValue(ctx, metaAccessKeyPublished, []byte("1"), false) }); err != nil {
			return local(err)
		}
	}
	return nil
}

// profileKey is this account's profile key, or nil before sealed sender
// was set up.
func (a *Account) profileKey() []byte {
	a.sealed.mu.Lock()
	defer a.sealed.mu.Unlock()
	return a.sealed.profileKey
}

// senderCertificate returns a current sender certificate for this device
// that chains to the pinned root, fetching a new one when the held one is
// near expiry; nil when sealed sender is off.
func (a *Account) senderCertificate(ctx context.Context) (*protocol.SenderCertificate, error) {
	s := &a.sealed
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root == nil {
		return nil, nil
	}
	now := a.now()
	if s.cert != nil && s.cert.Expires.Sub(now) > certificateRefresh {
		return s.cert, nil
	}
	raw, _, err := a.relay.SenderCertificate(ctx)
	if err != nil {
		return nil, err
	}
	c, err := protocol.ParseSenderCertificate(raw)
	if err != nil {
		return nil, fmt.Errorf("the relay's sender certificate: %w", err)
	}
	switch {
	case !c.Validate(*s.root, now):
		return nil, fmt.Errorf("%w (its sender certificate does not chain to the pinned root)", ErrTrustRootChanged)
	case c.SenderUUID != a.ID || int(c.SenderDevice) != a.DeviceID || !c.IdentityKey.Equal(a.identity.Public):
		return nil, errors.New("the relay's sender certificate is not for this device")
	}
	s.cert = c
	return c, nil
}

// accessKeyFor returns the unidentified-access key of r, or nil when we
// hold no profile key of theirs.
func (a *Account) accessKeyFor(ctx context.Context, r clientdb.Recipient) ([]byte, error) {
	if r.Account == a.ID {
		// Copies to our own other devices go identified, as Signal's
		// do: a sealed send addresses every device of the account, and
		// the relay could not leave out the sending one without being
		// told which it is.
		return nil, nil
	}
	var pk []byte
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		pk, err = tx.ProfileKey(ctx, r.Account)
		if errors.Is(err, clientdb.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return nil, local(err)
	}
	if pk == nil {
		return nil, nil
	}
	return protocol.DeriveAccessKey(pk)
}

// sealing is how a send goes sealed: our certificate and the recipient's
// access key.
type sealing struct {
	cert      *protocol.SenderCertificate
	accessKey []byte
}

// sealingFor returns how to send to r sealed, or nil to send normally:
// sealed sender off, no profile key of theirs, or no certificate (the
// reason is logged; the message still goes).
func (a *Account) sealingFor(ctx context.Context, r clientdb.Recipient) *sealing {
	key, err := a.accessKeyFor(ctx, r)
	if err != nil || key == nil {
		return nil
	}
	cert, err := a.senderCertificate(ctx)
	if err != nil {
		a.log.WarnContext(ctx, "sending without sealed sender", "err", err)
		return nil
	}
	if cert == nil {
		return nil
	}
	return &sealing{cert: cert, accessKey: key}
}

// unseal opens a sealed envelope: the certificate must chain to the
// pinned root, be current, not be this device's, and name the identity
// key the inner message uses. It returns the envelope as if sent
// identified: source from the certificate, inner type and content.
func (a *Account) unseal(ctx context.Context, st *signalStore, env *wire.Envelope) (*wire.Envelope, error) {
	a.sealed.mu.Lock()
	root := a.sealed.root
	a.sealed.mu.Unlock()
	if root == nil {
		return nil, fmt.Errorf("%w: a sealed-sender envelope, but no trust root is pinned", ErrBadEnvelope)
	}
	if len(env.Content) > maxEnvelope {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadEnvelope, len(env.Content))
	}
	u, err := protocol.Unseal(st.identity, env.Content)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	// Checked at the time the relay took the envelope, as Signal's
	// clients do: a message queued while we were offline is not refused
	// because its sender's certificate expired since. (The relay could
	// lie about that time, but it issues the certificates anyway.)
	if !u.Sender.Validate(*root, time.UnixMilli(env.ServerTimestamp)) {
		return nil, fmt.Errorf("%w: its sender certificate does not chain to the pinned trust root or had expired when the relay took it", ErrBadEnvelope)
	}
	id, err := uuid.Parse(u.Sender.SenderUUID)
	if err != nil || len(u.Sender.SenderUUID) != 36 {
		return nil, fmt.Errorf("%w: sender certificate names no account", ErrBadEnvelope)
	}
	if u.Sender.SenderUUID == st.self && int(u.Sender.SenderDevice) == st.device {
		return nil, fmt.Errorf("%w: %w", ErrBadEnvelope, protocol.ErrSealedSenderSelfSend)
	}
	inner := *env
	inner.SourceAccount, inner.SourceDevice = id, int(u.Sender.SenderDevice)
	inner.Type, inner.Content = int(u.Type), bytes.Clone(u.Contents)
	if u.Type == protocol.TypeSenderKey {
		// A group message: its sender-key signature proves the sender
		// only to those who hold its key, handed over the pairwise
		// session with the identity key we know, which must be the
		// certificate's.
		r, err := st.tx.Recipient(ctx, u.Sender.SenderUUID)
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
			return nil, local(err)
		}
		if r.IdentityKey == nil || !bytes.Equal(r.IdentityKey, u.Sender.IdentityKey.Bytes()) {
			return nil, fmt.Errorf("%w: a sealed group message whose certificate's identity key is not the sender's we know", ErrBadEnvelope)
		}
		inner.Type, inner.Content = EnvelopeSenderKey, append([]byte{groupFrameVersion}, u.Contents...)
		return &inner, nil
	}
	if err := protocol.CheckSealedIdentity(ctx, st, u); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	return &inner, nil
}

// sendSealedGroupCopies sends frame (our SenderKeyMessage for a group, in
// parley's framing) sealed to each target we can seal for: sealed sender
// v1 with the group message inside (type 7), one copy for all of a
// target's devices, admitted by its access key. It returns the targets
// still to be sent to identified: those we cannot seal for, and those
// whose sealed send failed for any reason (the identified multi-recipient
// send then repairs device lists and sender keys as it always does).
func (a *Account) sendSealedGroupCopies(ctx context.Context, targets []clientdb.Recipient, frame []byte, ts, timer int64) []clientdb.Recipient {
	var rest []clientdb.Recipient
	for _, t := range targets {
		seal := a.sealingFor(ctx, t)
		if seal == nil {
			rest = append(rest, t)
			continue
		}
		if err := a.sendSealedGroupCopy(ctx, t, frame, ts, timer, seal); err != nil {
			a.log.InfoContext(ctx, "group message to a member sent identified", "account", t.Account, "err", err)
			rest = append(rest, t)
		}
	}
	return rest
}

func (a *Account) sendSealedGroupCopy(ctx context.Context, t clientdb.Recipient, frame []byte, ts, timer int64, seal *sealing) error {
	var req relayclient.Send
	var body []byte
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		r, err := tx.Recipient(ctx, t.Account)
		if err != nil {
			return err
		}
		theirs, err := protocol.ParsePublicKey(r.IdentityKey)
		if err != nil {
			return fmt.Errorf("no identity key of %s to seal to: %w", t.Account, err)
		}
		u, err := protocol.NewUnidentifiedContent(protocol.CiphertextMessage{Type: protocol.TypeSenderKey, Bytes: frame[1:]},
			seal.cert, protocol.HintResendable, nil)
		if err != nil {
			return err
		}
		if body, err = protocol.SealV1(rand.Reader, *a.identity, theirs, u); err != nil {
			return err
		}
		devs, err := sessionDevices(ctx, tx, t.Account)
		if err != nil {
			return err
		}
		req = relayclient.Send{Timestamp: ts, Urgent: true, ExpiresIn: timer}
		for _, d := range devs {
			req.Messages = append(req.Messages, relayclient.Outgoing{DeviceID: d.DeviceID, RegistrationID: uint32(d.RegistrationID), Type: EnvelopeSealed, Content: body})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(req.Messages) == 0 {
		return errors.New("no sessions with its devices")
	}
	return a.submitSealed(ctx, t.Account, req, seal.accessKey)
}

// SetUnrestrictedUnidentifiedAccess lets anyone send this account sealed
// messages (true), or only those holding its profile key (false).
func (a *Account) SetUnrestrictedUnidentifiedAccess(ctx context.Context, unrestricted bool) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	pk := a.profileKey()
	if pk == nil {
		// Publishing without the key would take the account's access key
		// away from the relay and lock its contacts out of sealed sends.
		return fmt.Errorf("%w: this device has no profile key yet (the relay has no sealed sender, or the primary device has not set it up; change it there)", ErrUsage)
	}
	key, err := protocol.DeriveAccessKey(pk)
	if err != nil {
		return err
	}
	return a.relay.SetUnidentifiedAccess(ctx, key, unrestricted)
}
