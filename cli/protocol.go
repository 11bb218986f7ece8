package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/state/record"

	"github.com/parleyhq/parley/store/clientdb"
)

// serializer is libsignal's wire (protobuf) and record (JSON) encoding.
var serializer = serialize.NewProtoBufSerializer()

// TrustMode says how keys never seen before, and changed keys, are trusted
// (signal-cli's --trust-new-identities).
type TrustMode string

// Trust modes.
const (
	// TrustOnFirstUse trusts a contact's first key; a changed key is
	// untrusted until the user says otherwise. The default.
	TrustOnFirstUse TrustMode = "on-first-use"
	// TrustAlways trusts every key, including changed ones (still reported).
	TrustAlways TrustMode = "always"
	// TrustNever trusts no key until the user trusts it.
	TrustNever TrustMode = "never"
)

// ParseTrustMode checks a --trust-new-identities value.
func ParseTrustMode(s string) (TrustMode, error) {
	switch m := TrustMode(s); m {
	case TrustOnFirstUse, TrustAlways, TrustNever:
		return m, nil
	}
	return "", fmt.Errorf("%w: --trust-new-identities must be on-first-use, always or never", ErrUsage)
}

// IdentityChange records that a contact's identity key is new or changed.
type IdentityChange struct {
	Account string
	Changed bool // false: first key seen
	Trusted bool
}

// signalStore implements libsignal's stores over one database transaction,
// so everything a decryption changes commits or rolls back together.
// Records are deserialised fresh on every load and serialised on every
// store: the library mutates loaded sessions before checking MACs.
type signalStore struct {
	tx        *clientdb.Tx
	identity  *identity.KeyPair
	regID     uint32
	mode      TrustMode
	receiving bool // messages are decrypted whatever the key's trust; sending checks it
	now       time.Time
	self      string // our account id: our devices share our identity key
	changes   []IdentityChange
}

func address(account string, device int) *protocol.SignalAddress {
	return protocol.NewSignalAddress(account, uint32(device))
}

func (s *signalStore) GetIdentityKeyPair() *identity.KeyPair { return s.identity }
func (s *signalStore) GetLocalRegistrationID() uint32        { return s.regID }

// SaveIdentity records a contact's identity key; a new or changed key gets
// the trust the mode gives it and is reported.
func (s *signalStore) SaveIdentity(ctx context.Context, addr *protocol.SignalAddress, key *identity.Key) error {
	_, err := s.saveIdentity(ctx, addr.Name(), key.Serialize())
	return err
}

func (s *signalStore) saveIdentity(ctx context.Context, account string, key []byte) (clientdb.Recipient, error) {
	r, err := s.tx.Recipient(ctx, account)
	err = local(err)
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return r, err
	}
	if r.IdentityKey != nil && bytes.Equal(r.IdentityKey, key) {
		return r, nil
	}
	changed := r.IdentityKey != nil
	trust := clientdb.TrustedUnverified
	if s.mode == TrustNever || (changed && s.mode == TrustOnFirstUse) {
		trust = clientdb.Untrusted
	}
	if account == s.self {
		// Our own other devices hold our identity key; any other key for
		// our account is never trusted, whatever the mode.
		trust = clientdb.Untrusted
		if bytes.Equal(key, s.identity.PublicKey().Serialize()) {
			trust = clientdb.TrustedVerified
		}
	}
	r.Account, r.IdentityKey, r.Trust, r.KeyAddedMS = account, key, trust, s.now.UnixMilli()
	if err := s.tx.PutRecipient(ctx, r); err != nil {
		return r, local(err)
	}
	s.changes = append(s.changes, IdentityChange{Account: account, Changed: changed, Trusted: trust != clientdb.Untrusted})
	return r, nil
}

// IsTrustedIdentity decides whether we may encrypt to key: the stored key
// with any trust but Untrusted, or a new key the mode trusts. Receiving is
// always allowed (the change is recorded and shown instead).
func (s *signalStore) IsTrustedIdentity(ctx context.Context, addr *protocol.SignalAddress, key *identity.Key) (bool, error) {
	if s.receiving {
		return true, nil
	}
	r, err := s.tx.Recipient(ctx, addr.Name())
	err = local(err)
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return false, err
	}
	switch {
	case addr.Name() == s.self:
		return bytes.Equal(key.Serialize(), s.identity.PublicKey().Serialize()), nil
	case r.IdentityKey == nil:
		return s.mode != TrustNever, nil
	case bytes.Equal(r.IdentityKey, key.Serialize()):
		return r.Trust != clientdb.Untrusted, nil
	default:
		return s.mode == TrustAlways, nil
	}
}

func (s *signalStore) LoadSession(ctx context.Context, addr *protocol.SignalAddress) (*record.Session, error) {
	b, err := s.tx.Session(ctx, addr.Name(), int(addr.DeviceID()))
	err = local(err)
	if errors.Is(err, clientdb.ErrNotFound) {
		return record.NewSession(serializer.Session, serializer.State), nil
	}
	if err != nil {
		return nil, err
	}
	return record.NewSessionFromBytes(b, serializer.Session, serializer.State)
}

func (s *signalStore) GetSubDeviceSessions(ctx context.Context, name string) ([]uint32, error) {
	ds, err := s.tx.SessionDevices(ctx, name)
	err = local(err)
	var out []uint32
	for _, d := range ds {
		if d != 1 {
			out = append(out, uint32(d))
		}
	}
	return out, err
}

func (s *signalStore) StoreSession(ctx context.Context, addr *protocol.SignalAddress, r *record.Session) error {
	return local(s.tx.PutSession(ctx, addr.Name(), int(addr.DeviceID()), r.Serialize()))
}

func (s *signalStore) ContainsSession(ctx context.Context, addr *protocol.SignalAddress) (bool, error) {
	_, err := s.tx.Session(ctx, addr.Name(), int(addr.DeviceID()))
	err = local(err)
	if errors.Is(err, clientdb.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *signalStore) DeleteSession(ctx context.Context, addr *protocol.SignalAddress) error {
	return local(s.tx.DeleteSession(ctx, addr.Name(), int(addr.DeviceID())))
}

func (s *signalStore) DeleteAllSessions(ctx context.Context) error {
	return local(s.tx.DeleteSessions(ctx, "", true))
}

// LoadPreKey rebuilds the key pair from the private key: records read back
// from bytes carry a truncated public key (LIBSIGNAL-NOTES pitfall 2), and
// the public half of a signed prekey becomes our first ratchet key.
func (s *signalStore) LoadPreKey(ctx context.Context, id uint32) (*record.PreKey, error) {
	b, err := s.tx.PreKey(ctx, id)
	err = local(err)
	if err != nil {
		return nil, fmt.Errorf("prekey %d: %w", id, err)
	}
	r, err := record.NewPreKeyFromBytes(b, serializer.PreKeyRecord)
	if err != nil {
		return nil, err
	}
	priv := r.KeyPair().PrivateKey().Serialize()
	return record.NewPreKey(id, ecc.CreateKeyPair(priv[:]), serializer.PreKeyRecord), nil
}

func (s *signalStore) StorePreKey(ctx context.Context, id uint32, r *record.PreKey) error {
	return local(s.tx.PutPreKey(ctx, id, r.Serialize()))
}

func (s *signalStore) ContainsPreKey(ctx context.Context, id uint32) (bool, error) {
	_, err := s.tx.PreKey(ctx, id)
	err = local(err)
	if errors.Is(err, clientdb.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *signalStore) RemovePreKey(ctx context.Context, id uint32) error {
	return local(s.tx.DeletePreKey(ctx, id))
}

func (s *signalStore) LoadSignedPreKey(ctx context.Context, id uint32) (*record.SignedPreKey, error) {
	b, err := s.tx.SignedPreKey(ctx, id)
	err = local(err)
	if err != nil {
		return nil, fmt.Errorf("signed prekey %d: %w", id, err)
	}
	r, err := record.NewSignedPreKeyFromBytes(b, serializer.SignedPreKeyRecord)
	if err != nil {
		return nil, err
	}
	priv := r.KeyPair().PrivateKey().Serialize()
	return record.NewSignedPreKey(id, r.Timestamp(), ecc.CreateKeyPair(priv[:]), r.Signature(), serializer.SignedPreKeyRecord), nil
}

func (s *signalStore) LoadSignedPreKeys(ctx context.Context) ([]*record.SignedPreKey, error) {
	ids, _, err := s.tx.SignedPreKeyIDs(ctx)
	err = local(err)
	if err != nil {
		return nil, err
	}
	out := make([]*record.SignedPreKey, 0, len(ids))
	for _, id := range ids {
		r, err := s.LoadSignedPreKey(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *signalStore) StoreSignedPreKey(ctx context.Context, id uint32, r *record.SignedPreKey) error {
	return local(s.tx.PutSignedPreKey(ctx, id, r.Timestamp(), r.Serialize()))
}

func (s *signalStore) ContainsSignedPreKey(ctx context.Context, id uint32) (bool, error) {
	_, err := s.tx.SignedPreKey(ctx, id)
	err = local(err)
	if errors.Is(err, clientdb.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *signalStore) RemoveSignedPreKey(ctx context.Context, id uint32) error {
	return local(s.tx.DeleteSignedPreKey(ctx, id))
}

// deviceName is how a device appears in messages: "ACCOUNT.DEVICE".
func deviceName(account string, device int) string { return account + "." + strconv.Itoa(device) }

// builder returns a session builder for addr over s.
func (s *signalStore) builder(addr *protocol.SignalAddress) *session.Builder {
	return session.NewBuilder(s, s, s, s, addr, serializer)
}

// localError marks a failure of the local database, as opposed to a
// message that cannot be decrypted: an envelope whose processing hit one
// is not acknowledged, so the relay delivers it again.
type localError struct{ err error }

func (e localError) Error() string { return "local database: " + e.err.Error() }
func (e localError) Unwrap() error { return e.err }

// local wraps database errors other than "not found" (which the library
// treats as an answer).
func local(err error) error {
	if err == nil || errors.Is(err, clientdb.ErrNotFound) {
		return err
	}
	return localError{err}
}
