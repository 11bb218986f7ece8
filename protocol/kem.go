package protocol

import (
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/cloudflare/circl/kem/kyber/kyber1024"
)

// KEM key and ciphertext sizes. Serialized KEM keys and ciphertexts carry a
// type byte first; libsignal's 0x08 is round-3 Kyber1024, the only KEM that
// official libsignal accepts in prekey bundles today (it refuses 0x0a,
// ML-KEM-1024).
const (
	KEMTypeKyber1024   byte = 0x08
	KEMPublicKeySize        = 1 + kyber1024.PublicKeySize
	KEMCiphertextSize       = 1 + kyber1024.CiphertextSize
	kemPrivateKeySize       = 1 + kyber1024.PrivateKeySize
	kemSharedSecretLen      = kyber1024.SharedKeySize
)

// KEMPublicKey is a Kyber1024 public key, as published in a Kyber prekey.
type KEMPublicKey struct {
	b []byte // serialized: type byte + key
}

// ParseKEMPublicKey reads a serialized KEM public key (type 0x08, 1569 bytes).
func ParseKEMPublicKey(b []byte) (KEMPublicKey, error) {
	if len(b) == 0 {
		return KEMPublicKey{}, fmt.Errorf("%w: empty KEM public key", ErrInvalidKey)
	}
	if b[0] != KEMTypeKyber1024 {
		return KEMPublicKey{}, fmt.Errorf("%w: KEM key type 0x%02x, want 0x08 (Kyber1024)", ErrInvalidKey, b[0])
	}
	if len(b) != KEMPublicKeySize {
		return KEMPublicKey{}, fmt.Errorf("%w: KEM public key is %d bytes, want %d", ErrInvalidKey, len(b), KEMPublicKeySize)
	}
	return KEMPublicKey{b: append([]byte(nil), b...)}, nil
}

// Bytes is the serialized key.
func (k KEMPublicKey) Bytes() []byte { return append([]byte(nil), k.b...) }

// IsZero reports whether k was never set.
func (k KEMPublicKey) IsZero() bool { return len(k.b) == 0 }

// Equal reports whether two KEM public keys are the same.
func (k KEMPublicKey) Equal(o KEMPublicKey) bool { return subtle.ConstantTimeCompare(k.b, o.b) == 1 }

// Encapsulate makes a shared secret and the serialized ciphertext (type
// byte first) that carries it to the key's owner.
func (k KEMPublicKey) Encapsulate(rand io.Reader) (secret, ciphertext []byte, err error) {
	if len(k.b) != KEMPublicKeySize {
		return nil, nil, fmt.Errorf("%w: KEM public key not set", ErrInvalidKey)
	}
	var pk kyber1024.PublicKey
	pk.Unpack(k.b[1:])
	seed := make([]byte, kyber1024.EncapsulationSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, nil, fmt.Errorf("encapsulate: %w", err)
	}
	ct := make([]byte, KEMCiphertextSize)
	ct[0] = KEMTypeKyber1024
	ss := make([]byte, kemSharedSecretLen)
	pk.EncapsulateTo(ct[1:], ss, seed)
	return ss, ct, nil
}

// KEMKeyPair is a Kyber1024 key pair: a Kyber prekey's private half.
type KEMKeyPair struct {
	_      [0]func()
	Public KEMPublicKey
	priv   []byte // serialized: type byte + key
}

// GenerateKEMKeyPair makes a Kyber1024 key pair.
func GenerateKEMKeyPair(rand io.Reader) (KEMKeyPair, error) {
	seed := make([]byte, kyber1024.KeySeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return KEMKeyPair{}, fmt.Errorf("generate KEM key: %w", err)
	}
	pk, sk := kyber1024.NewKeyFromSeed(seed)
	pub := make([]byte, KEMPublicKeySize)
	pub[0] = KEMTypeKyber1024
	pk.Pack(pub[1:])
	priv := make([]byte, kemPrivateKeySize)
	priv[0] = KEMTypeKyber1024
	sk.Pack(priv[1:])
	return KEMKeyPair{Public: KEMPublicKey{b: pub}, priv: priv}, nil
}

// ParseKEMKeyPair rebuilds a key pair from its stored parts (see
// PrivateBytes).
func ParseKEMKeyPair(public, private []byte) (KEMKeyPair, error) {
	pub, err := ParseKEMPublicKey(public)
	if err != nil {
		return KEMKeyPair{}, err
	}
	if len(private) != kemPrivateKeySize || private[0] != KEMTypeKyber1024 {
		return KEMKeyPair{}, fmt.Errorf("%w: KEM private key is %d bytes, want %d of type 0x08", ErrInvalidKey, len(private), kemPrivateKeySize)
	}
	return KEMKeyPair{Public: pub, priv: append([]byte(nil), private...)}, nil
}

// KEMKeyPairFromPrivate rebuilds a key pair from its stored private key
// alone (a Kyber private key holds its public key).
func KEMKeyPairFromPrivate(private []byte) (KEMKeyPair, error) {
	if len(private) != kemPrivateKeySize || private[0] != KEMTypeKyber1024 {
		return KEMKeyPair{}, fmt.Errorf("%w: KEM private key is %d bytes, want %d of type 0x08", ErrInvalidKey, len(private), kemPrivateKeySize)
	}
	var sk kyber1024.PrivateKey
	sk.Unpack(private[1:])
	pub := make([]byte, KEMPublicKeySize)
	pub[0] = KEMTypeKyber1024
	sk.Public().(*kyber1024.PublicKey).Pack(pub[1:])
	return KEMKeyPair{Public: KEMPublicKey{b: pub}, priv: append([]byte(nil), private...)}, nil
}

// PrivateBytes is the serialized private key, for storage only.
func (k KEMKeyPair) PrivateBytes() []byte { return append([]byte(nil), k.priv...) }

// String never shows the private key.
func (KEMKeyPair) String() string { return "KEMKeyPair(redacted)" }

// GoString never shows the private key (%#v).
func (KEMKeyPair) GoString() string { return "protocol.KEMKeyPair(redacted)" }

// Decapsulate recovers the shared secret from a serialized ciphertext.
func (k KEMKeyPair) Decapsulate(ciphertext []byte) ([]byte, error) {
	if len(k.priv) != kemPrivateKeySize {
		return nil, fmt.Errorf("%w: KEM private key not set", ErrInvalidKey)
	}
	if len(ciphertext) == 0 || ciphertext[0] != KEMTypeKyber1024 {
		return nil, fmt.Errorf("%w: KEM ciphertext is not of type 0x08", ErrInvalidMessage)
	}
	if len(ciphertext) != KEMCiphertextSize {
		return nil, fmt.Errorf("%w: KEM ciphertext is %d bytes, want %d", ErrInvalidMessage, len(ciphertext), KEMCiphertextSize)
	}
	var sk kyber1024.PrivateKey
	sk.Unpack(k.priv[1:])
	ss := make([]byte, kemSharedSecretLen)
	sk.DecapsulateTo(ss, ciphertext[1:])
	return ss, nil
}
