package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/protocol"
)

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

// signalStore implements the protocol package's stores over one database
// transaction, so everything a decryption changes commits or rolls back
// together.
type signalStore struct {
	tx       *clientdb.Tx
	identity protocol.IdentityKeyPair
	regID    uint32
	mode     TrustMode
	now      time.Time
	self     string // our account id: our devices share our identity key
	device   int    // our device id
	// group is the group whose sender keys LoadSenderKey and StoreSenderKey
	// address: records are kept per group, whatever distribution id the
	// sender chose.
	group   string
	changes []IdentityChange
}

func address(account string, device int) protocol.Address {
	return protocol.Address{Name: account, DeviceID: uint32(device)}
}

// IdentityKeyPair implements protocol.IdentityStore.
func (s *signalStore) IdentityKeyPair(context.Context) (protocol.IdentityKeyPair, error) {
	return s.identity, nil
}

// LocalRegistrationID implements protocol.IdentityStore.
func (s *signalStore) LocalRegistrationID(context.Context) (uint32, error) { return s.regID, nil }

// SaveIdentity records a contact's identity key; a new or changed key gets
// the trust the mode gives it and is reported.
func (s *signalStore) SaveIdentity(ctx context.Context, addr protocol.Address, key protocol.PublicKey) error {
	_, err := s.saveIdentity(ctx, addr.Name, key.Bytes())
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
		if bytes.Equal(key, s.identity.Public.Bytes()) {
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
func (s *signalStore) IsTrustedIdentity(ctx context.Context, addr protocol.Address, key protocol.PublicKey, dir protocol.Direction) (bool, error) {
	if addr.Name == s.self {
		// Our own devices hold our identity key, whichever way the message
		// goes: anyone else claiming our account is refused.
		return key.Equal(s.identity.Public), nil
	}
	if dir == protocol.Receiving {
		return true, nil
	}
	r, err := s.tx.Recipient(ctx, addr.Name)
	err = local(err)
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return false, err
	}
	switch {
	case r.IdentityKey == nil:
		return s.mode != TrustNever, nil
	case bytes.Equal(r.IdentityKey, key.Bytes()):
		return r.Trust != clientdb.Untrusted, nil
	default:
		return s.mode == TrustAlways, nil
	}
}

// LoadSession returns the stored record, or nil. Records of the X3DH era
// were dropped when the store was upgraded; a record that does not parse
// now is damaged, and reported.
func (s *signalStore) LoadSession(ctx context.Context, addr protocol.Address) (*protocol.SessionRecord, error) {
	b, err := s.tx.Session(ctx, addr.Name, int(addr.DeviceID))
	if errors.Is(err, clientdb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, local(err)
	}
	r, err := protocol.ParseSessionRecord(b)
	if err != nil {
		return nil, fmt.Errorf("stored session with %s: %w", addr, err)
	}
	return r, nil
}

// StoreSession implements protocol.SessionStore.
func (s *signalStore) StoreSession(ctx context.Context, addr protocol.Address, r *protocol.SessionRecord) error {
	return local(s.tx.PutSession(ctx, addr.Name, int(addr.DeviceID), r.Bytes()))
}

// Stored prekey records: a one-time prekey is its 32-byte private key; a
// signed prekey its private key and the identity's 64-byte signature; a
// Kyber prekey its serialized private key (which holds the public key).

// LoadPreKey implements protocol.PreKeyStore.
func (s *signalStore) LoadPreKey(ctx context.Context, id uint32) (protocol.PreKeyRecord, error) {
	b, err := s.tx.PreKey(ctx, id)
	if errors.Is(err, clientdb.ErrNotFound) {
		return protocol.PreKeyRecord{}, fmt.Errorf("%w: one-time prekey %d", protocol.ErrNoPreKey, id)
	}
	if err != nil {
		return protocol.PreKeyRecord{}, local(err)
	}
	kp, err := protocol.KeyPairFromPrivate(b)
	if err != nil {
		return protocol.PreKeyRecord{}, fmt.Errorf("stored prekey %d: %w", id, err)
	}
	return protocol.PreKeyRecord{ID: id, KeyPair: kp}, nil
}

// RemovePreKey implements protocol.PreKeyStore.
func (s *signalStore) RemovePreKey(ctx context.Context, id uint32) error {
	return local(s.tx.DeletePreKey(ctx, id))
}

// LoadSignedPreKey implements protocol.SignedPreKeyStore.
func (s *signalStore) LoadSignedPreKey(ctx context.Context, id uint32) (protocol.SignedPreKeyRecord, error) {
	b, err := s.tx.SignedPreKey(ctx, id)
	if errors.Is(err, clientdb.ErrNotFound) {
		return protocol.SignedPreKeyRecord{}, fmt.Errorf("%w: signed prekey %d", protocol.ErrNoPreKey, id)
	}
	if err != nil {
		return protocol.SignedPreKeyRecord{}, local(err)
	}
	if len(b) != protocol.PrivateKeySize+protocol.SignatureSize {
		return protocol.SignedPreKeyRecord{}, fmt.Errorf("stored signed prekey %d is %d bytes", id, len(b))
	}
	kp, err := protocol.KeyPairFromPrivate(b[:protocol.PrivateKeySize])
	if err != nil {
		return protocol.SignedPreKeyRecord{}, err
	}
	return protocol.SignedPreKeyRecord{ID: id, KeyPair: kp, Signature: b[protocol.PrivateKeySize:]}, nil
}

// LoadKyberPreKey implements protocol.KyberPreKeyStore.
func (s *signalStore) LoadKyberPreKey(ctx context.Context, id uint32) (protocol.KyberPreKeyRecord, error) {
	b, _, err := s.tx.KEMPreKey(ctx, id)
	if errors.Is(err, clientdb.ErrNotFound) {
		return protocol.KyberPreKeyRecord{}, fmt.Errorf("%w: Kyber prekey %d", protocol.ErrNoPreKey, id)
	}
	if err != nil {
		return protocol.KyberPreKeyRecord{}, local(err)
	}
	kp, err := protocol.KEMKeyPairFromPrivate(b)
	if err != nil {
		return protocol.KyberPreKeyRecord{}, fmt.Errorf("stored Kyber prekey %d: %w", id, err)
	}
	return protocol.KyberPreKeyRecord{ID: id, KeyPair: kp}, nil
}

// MarkKyberPreKeyUsed deletes a one-time Kyber prekey; the last-resort key
// stays, and a second use of it with the same signed prekey and base key
// (a replayed PreKey message) is refused.
func (s *signalStore) MarkKyberPreKeyUsed(ctx context.Context, id, signedID uint32, base protocol.PublicKey) error {
	_, lastResort, err := s.tx.KEMPreKey(ctx, id)
	if err != nil {
		return local(err)
	}
	if !lastResort {
		return local(s.tx.DeleteOneTimeKEMPreKey(ctx, id))
	}
	fresh, err := s.tx.RecordKyberUse(ctx, id, signedID, base.Bytes())
	if err != nil {
		return local(err)
	}
	if !fresh {
		return fmt.Errorf("%w: Kyber prekey %d", protocol.ErrPreKeyReused, id)
	}
	return nil
}

// LoadSenderKey implements protocol.SenderKeyStore for s.group.
func (s *signalStore) LoadSenderKey(ctx context.Context, sender protocol.Address, _ uuid.UUID) (*protocol.SenderKeyRecord, error) {
	if s.group == "" {
		return nil, errors.New("sender keys used outside a group")
	}
	b, err := s.tx.SenderKey(ctx, s.group, sender.Name, int(sender.DeviceID))
	if errors.Is(err, clientdb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, local(err)
	}
	r, err := protocol.ParseSenderKeyRecord(b)
	if err != nil {
		return nil, fmt.Errorf("stored sender key of %s: %w", sender, err)
	}
	return r, nil
}

// StoreSenderKey implements protocol.SenderKeyStore for s.group.
func (s *signalStore) StoreSenderKey(ctx context.Context, sender protocol.Address, _ uuid.UUID, r *protocol.SenderKeyRecord) error {
	if s.group == "" {
		return errors.New("sender keys used outside a group")
	}
	return local(s.tx.PutSenderKey(ctx, s.group, sender.Name, int(sender.DeviceID), r.Bytes()))
}

var (
	_ protocol.Store          = (*signalStore)(nil)
	_ protocol.SenderKeyStore = (*signalStore)(nil)
)

// deviceName is how a device appears in messages: "ACCOUNT.DEVICE".
func deviceName(account string, device int) string { return account + "." + strconv.Itoa(device) }

// localError marks a failure of the local database, as opposed to a
// message that cannot be decrypted: an envelope whose processing hit one
// is not acknowledged, so the relay delivers it again.
type localError struct{ err error }

// Error says the failure was local.
func (e localError) Error() string { return "local database: " + e.err.Error() }

// Unwrap is the database's error.
func (e localError) Unwrap() error { return e.err }

// local wraps database errors other than "not found" (which the library
// treats as an answer).
func local(err error) error {
	if err == nil || errors.Is(err, clientdb.ErrNotFound) {
		return err
	}
	return localError{err}
}
