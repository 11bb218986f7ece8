package protocol

import (
	"fmt"
	"io"
	"time"
)

// PreKeyRecord is a one-time EC prekey: used by one session, then deleted.
type PreKeyRecord struct {
	ID      uint32
	KeyPair KeyPair
}

// SignedPreKeyRecord is the medium-term EC prekey, signed by the identity
// key and replaced from time to time.
type SignedPreKeyRecord struct {
	ID        uint32
	KeyPair   KeyPair
	Signature []byte
	Timestamp time.Time
}

// KyberPreKeyRecord is a Kyber1024 prekey signed by the identity key: a
// one-time key (deleted after use) or the last-resort key (kept; used when
// the one-time keys have run out).
type KyberPreKeyRecord struct {
	ID        uint32
	KeyPair   KEMKeyPair
	Signature []byte
	Timestamp time.Time
}

// GeneratePreKey makes a one-time EC prekey.
func GeneratePreKey(rand io.Reader, id uint32) (PreKeyRecord, error) {
	kp, err := GenerateKeyPair(rand)
	if err != nil {
		return PreKeyRecord{}, err
	}
	return PreKeyRecord{ID: id, KeyPair: kp}, nil
}

// GenerateSignedPreKey makes a signed EC prekey: the identity key signs
// the serialized public key.
func GenerateSignedPreKey(rand io.Reader, identity IdentityKeyPair, id uint32, now time.Time) (SignedPreKeyRecord, error) {
	kp, err := GenerateKeyPair(rand)
	if err != nil {
		return SignedPreKeyRecord{}, err
	}
	sig, err := identity.Private.Sign(rand, kp.Public.Bytes())
	if err != nil {
		return SignedPreKeyRecord{}, err
	}
	return SignedPreKeyRecord{ID: id, KeyPair: kp, Signature: sig, Timestamp: now}, nil
}

// GenerateKyberPreKey makes a signed Kyber1024 prekey: the identity key
// signs the serialized public key (type byte included).
func GenerateKyberPreKey(rand io.Reader, identity IdentityKeyPair, id uint32, now time.Time) (KyberPreKeyRecord, error) {
	kp, err := GenerateKEMKeyPair(rand)
	if err != nil {
		return KyberPreKeyRecord{}, err
	}
	sig, err := identity.Private.Sign(rand, kp.Public.Bytes())
	if err != nil {
		return KyberPreKeyRecord{}, err
	}
	return KyberPreKeyRecord{ID: id, KeyPair: kp, Signature: sig, Timestamp: now}, nil
}

// PreKeyBundle is what a relay hands out for one device of a contact: its
// identity, registration id and the prekeys to start a PQXDH session with.
// PreKey is nil when the device's one-time EC prekeys have run out.
type PreKeyBundle struct {
	RegistrationID        uint32
	DeviceID              uint32
	PreKeyID              uint32
	PreKey                *PublicKey
	SignedPreKeyID        uint32
	SignedPreKey          PublicKey
	SignedPreKeySignature []byte
	KyberPreKeyID         uint32
	KyberPreKey           KEMPublicKey
	KyberPreKeySignature  []byte
	IdentityKey           PublicKey
}

// Verify checks that the identity key signed both prekeys.
func (b *PreKeyBundle) Verify() error {
	if b.IdentityKey.IsZero() || b.SignedPreKey.IsZero() || b.KyberPreKey.IsZero() {
		return fmt.Errorf("%w: bundle lacks an identity, signed prekey or Kyber prekey", ErrInvalidKey)
	}
	if !b.IdentityKey.Verify(b.SignedPreKeySignature, b.SignedPreKey.Bytes()) {
		return fmt.Errorf("%w: signed prekey %d", ErrInvalidSignature, b.SignedPreKeyID)
	}
	if !b.IdentityKey.Verify(b.KyberPreKeySignature, b.KyberPreKey.Bytes()) {
		return fmt.Errorf("%w: Kyber prekey %d", ErrInvalidSignature, b.KyberPreKeyID)
	}
	return nil
}
