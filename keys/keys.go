// Package keys holds the public key material devices publish for the Signal
// protocol: identity keys, signed prekeys, Kyber (PQ) prekeys and one-time
// prekeys, with their exact encodings and signature checks.
//
// Every constructor validates length and type prefix before any curve
// arithmetic; signatures are checked with the protocol package's XEdDSA,
// which accepts exactly what official libsignal signs.
package keys

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/protocol"
)

// Encoded sizes, as Signal serialises them.
const (
	ECPublicKeySize  = 33   // 0x05 || Curve25519 public key
	KEMPublicKeySize = 1569 // 0x08 || Kyber1024 public key
	SignatureSize    = 64   // XEdDSA signature
	MaxKeyID         = 0xFFFFFF
)

// Type prefixes of serialised public keys.
const (
	ecTypeDJB        = 0x05
	kemTypeKyber1024 = 0x08
)

// Errors returned by the parsers and Verify methods; callers map them to 422.
var (
	ErrBadKey       = errors.New("malformed public key")
	ErrBadSignature = errors.New("signature does not verify against the identity key")
	ErrBadKeyID     = fmt.Errorf("key id must be between 1 and %d", MaxKeyID)
)

// ECPublicKey is a serialised Curve25519 public key (type byte 0x05 and 32 bytes).
type ECPublicKey [ECPublicKeySize]byte

// ParseECPublicKey checks b's length and type prefix.
func ParseECPublicKey(b []byte) (ECPublicKey, error) {
	var k ECPublicKey
	if len(b) != ECPublicKeySize {
		return k, fmt.Errorf("%w: EC public key is %d bytes, want %d", ErrBadKey, len(b), ECPublicKeySize)
	}
	if b[0] != ecTypeDJB {
		return k, fmt.Errorf("%w: EC public key type 0x%02x, want 0x05", ErrBadKey, b[0])
	}
	copy(k[:], b)
	return k, nil
}

// Equal reports whether two keys are the same, in constant time.
func (k ECPublicKey) Equal(o ECPublicKey) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// KEMPublicKey is a serialised Kyber1024 public key (type byte 0x08 and 1568 bytes).
// The relay stores it opaquely; it only checks the encoding and the signature.
type KEMPublicKey []byte

// ParseKEMPublicKey checks b's length and type prefix and copies it.
func ParseKEMPublicKey(b []byte) (KEMPublicKey, error) {
	if len(b) != KEMPublicKeySize {
		return nil, fmt.Errorf("%w: KEM public key is %d bytes, want %d", ErrBadKey, len(b), KEMPublicKeySize)
	}
	if b[0] != kemTypeKyber1024 {
		return nil, fmt.Errorf("%w: KEM public key type 0x%02x, want 0x08", ErrBadKey, b[0])
	}
	return append(KEMPublicKey(nil), b...), nil
}

// Signature is an XEdDSA signature by an identity key.
type Signature [SignatureSize]byte

// ParseSignature checks b's length.
func ParseSignature(b []byte) (Signature, error) {
	var s Signature
	if len(b) != SignatureSize {
		return s, fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadKey, len(b), SignatureSize)
	}
	copy(s[:], b)
	return s, nil
}

// CheckID validates a prekey id (ids start at 1: libsignal reads 0 as "none").
func CheckID(id uint32) error {
	if id < 1 || id > MaxKeyID {
		return fmt.Errorf("%w, got %d", ErrBadKeyID, id)
	}
	return nil
}

// verify reports whether sig is identity's XEdDSA signature over msg.
func verify(identity ECPublicKey, msg []byte, sig Signature) bool {
	pub, err := protocol.ParsePublicKey(identity[:])
	if err != nil {
		return false
	}
	return pub.Verify(sig[:], msg)
}

// PreKey is a one-time EC prekey: used for one session, then deleted.
type PreKey struct {
	ID        uint32
	PublicKey ECPublicKey
}

// SignedPreKey is a medium-term EC prekey signed by the identity key.
type SignedPreKey struct {
	ID        uint32
	PublicKey ECPublicKey
	Signature Signature
}

// Verify checks the id and that identity signed the serialised public key.
func (k SignedPreKey) Verify(identity ECPublicKey) error {
	if err := CheckID(k.ID); err != nil {
		return fmt.Errorf("signed prekey: %w", err)
	}
	if !verify(identity, k.PublicKey[:], k.Signature) {
		return fmt.Errorf("signed prekey %d: %w", k.ID, ErrBadSignature)
	}
	return nil
}

// KEMPreKey is a Kyber prekey signed by the identity key: either one-time or
// the device's last-resort key, used when the one-time pool is empty.
type KEMPreKey struct {
	ID        uint32
	PublicKey KEMPublicKey
	Signature Signature
}

// Verify checks the id and that identity signed the serialised public key.
func (k KEMPreKey) Verify(identity ECPublicKey) error {
	if err := CheckID(k.ID); err != nil {
		return fmt.Errorf("kyber prekey: %w", err)
	}
	if !verify(identity, k.PublicKey, k.Signature) {
		return fmt.Errorf("kyber prekey %d: %w", k.ID, ErrBadSignature)
	}
	return nil
}

// Limits on one upload request.
const (
	MaxPreKeysPerUpload = 100
	// MaxPoolSize caps each one-time pool per device, bounding what one
	// device can make the relay store.
	MaxPoolSize = 1000
)

// Upload is one batch of key material from a device. Every field is optional;
// what is present replaces (signed and last-resort keys) or extends (one-time
// pools) what the relay holds, all or nothing.
type Upload struct {
	SignedPreKey *SignedPreKey
	LastResort   *KEMPreKey
	PreKeys      []PreKey
	KEMPreKeys   []KEMPreKey
	// ReplaceKEMPreKeys deletes the device's unclaimed one-time KEM prekeys
	// before KEMPreKeys are added.
	ReplaceKEMPreKeys bool
}

// Signatures returns how many signatures Validate verifies at most.
func (u Upload) Signatures() int {
	n := len(u.KEMPreKeys)
	if n > MaxPreKeysPerUpload || len(u.PreKeys) > MaxPreKeysPerUpload {
		n = 0 // refused before the one-time keys' signatures
	}
	if u.SignedPreKey != nil {
		n++
	}
	if u.LastResort != nil {
		n++
	}
	return n
}

// Validate checks counts, ids (unique within each kind) and every signature
// against identity. It returns the first problem found.
func (u Upload) Validate(identity ECPublicKey) error {
	if u.SignedPreKey != nil {
		if err := u.SignedPreKey.Verify(identity); err != nil {
			return err
		}
	}
	if u.LastResort != nil {
		if err := u.LastResort.Verify(identity); err != nil {
			return fmt.Errorf("last resort: %w", err)
		}
	}
	if len(u.PreKeys) > MaxPreKeysPerUpload || len(u.KEMPreKeys) > MaxPreKeysPerUpload {
		return fmt.Errorf("%w: at most %d one-time prekeys of each kind per upload", ErrTooMany, MaxPreKeysPerUpload)
	}
	seen := make(map[uint32]bool, len(u.PreKeys))
	for _, k := range u.PreKeys {
		if err := CheckID(k.ID); err != nil {
			return fmt.Errorf("one-time prekey: %w", err)
		}
		if seen[k.ID] {
			return fmt.Errorf("%w: one-time prekey id %d repeated", ErrDuplicateID, k.ID)
		}
		seen[k.ID] = true
	}
	clear(seen)
	for _, k := range u.KEMPreKeys {
		if err := k.Verify(identity); err != nil {
			return fmt.Errorf("one-time %w", err)
		}
		if seen[k.ID] {
			return fmt.Errorf("%w: kyber prekey id %d repeated", ErrDuplicateID, k.ID)
		}
		seen[k.ID] = true
	}
	return nil
}

// More upload errors.
var (
	// ErrDuplicateID reports a one-time prekey id repeated in a request or
	// already present in the device's pool.
	ErrDuplicateID = errors.New("duplicate prekey id")
	// ErrTooMany reports an upload or a pool over its limit.
	ErrTooMany = errors.New("too many prekeys")
	// ErrNoDevice reports that the device no longer exists.
	ErrNoDevice = errors.New("no such device")
)

// Store persists uploads.
type Store interface {
	// StoreKeys applies u to the device's keys in one transaction: nothing is
	// written if any part fails. It returns ErrDuplicateID if a one-time id is
	// already pooled, ErrTooMany if a pool would exceed MaxPoolSize, and
	// ErrNoDevice if the device is gone. u has been validated.
	StoreKeys(ctx context.Context, account uuid.UUID, device int, u Upload) error
}
