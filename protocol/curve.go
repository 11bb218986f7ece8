package protocol

import (
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"golang.org/x/crypto/curve25519"
)

// Curve25519 key sizes and the type byte that prefixes a serialized public
// key ("DJB" keys in libsignal).
const (
	PublicKeySize       = 33
	PrivateKeySize      = 32
	SignatureSize       = 64
	djbType        byte = 0x05
)

// ErrInvalidKey reports a key that cannot be parsed or used.
var ErrInvalidKey = errors.New("invalid key")

// PublicKey is a Curve25519 public key (a Montgomery u-coordinate). Its
// serialized form, as everywhere in the Signal protocol, is the type byte
// 0x05 followed by the 32 bytes of u.
type PublicKey struct {
	u [32]byte
}

// ParsePublicKey reads a serialized public key: exactly 33 bytes, 0x05 first.
func ParsePublicKey(b []byte) (PublicKey, error) {
	if len(b) != PublicKeySize {
		return PublicKey{}, fmt.Errorf("%w: public key is %d bytes, want %d", ErrInvalidKey, len(b), PublicKeySize)
	}
	if b[0] != djbType {
		return PublicKey{}, fmt.Errorf("%w: public key type 0x%02x, want 0x05", ErrInvalidKey, b[0])
	}
	var k PublicKey
	copy(k.u[:], b[1:])
	return k, nil
}

// PublicKeyFromBytes makes a public key from its 32 raw bytes (no type byte).
func PublicKeyFromBytes(u []byte) (PublicKey, error) {
	if len(u) != 32 {
		return PublicKey{}, fmt.Errorf("%w: raw public key is %d bytes, want 32", ErrInvalidKey, len(u))
	}
	var k PublicKey
	copy(k.u[:], u)
	return k, nil
}

// Bytes is the serialized key: 0x05 and the 32 bytes of u.
func (k PublicKey) Bytes() []byte {
	b := make([]byte, PublicKeySize)
	b[0] = djbType
	copy(b[1:], k.u[:])
	return b
}

// Raw is the 32 bytes of u without the type byte.
func (k PublicKey) Raw() []byte { return append([]byte(nil), k.u[:]...) }

// Equal reports whether two public keys are the same, in constant time.
func (k PublicKey) Equal(o PublicKey) bool {
	return subtle.ConstantTimeCompare(k.u[:], o.u[:]) == 1
}

// IsZero reports whether k was never set.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// String shows the key in hex; public keys are not secret.
func (k PublicKey) String() string { return fmt.Sprintf("%x", k.Bytes()) }

// canonical reports whether u is a canonical field element and the point is
// free of small-order components, as libsignal requires of a PreKey
// message's base key.
func (k PublicKey) canonical() bool {
	if k.u[31]&0x80 != 0 {
		return false
	}
	// u >= p = 2^255-19: first byte >= 0xED, 30 bytes of 0xFF, last 0x7F.
	big := k.u[0] >= 0xED && k.u[31] == 0x7F
	for _, c := range k.u[1:31] {
		big = big && c == 0xFF
	}
	if big {
		return false
	}
	p, ok := montgomeryToEdwards(k.u, 0)
	if !ok {
		return false
	}
	return torsionFree(p)
}

// torsionFree reports whether p lies in the prime-order subgroup.
func torsionFree(p *edwards25519.Point) bool {
	// l-1 as a canonical scalar; [l]P = [l-1]P + P.
	lMinus1 := [32]byte{0xec, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(lMinus1[:])
	if err != nil {
		return false
	}
	q := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(s, p, edwards25519.NewScalar())
	q.Add(q, p)
	return q.Equal(edwards25519.NewIdentityPoint()) == 1
}

// montgomeryToEdwards maps u to the Edwards point with y = (u-1)/(u+1) and
// the given sign of x. It fails where the birational map is undefined or
// the result is not on the curve.
func montgomeryToEdwards(u [32]byte, sign byte) (*edwards25519.Point, bool) {
	fu, err := new(field.Element).SetBytes(u[:])
	if err != nil {
		return nil, false
	}
	one := new(field.Element).One()
	num := new(field.Element).Subtract(fu, one)
	den := new(field.Element).Add(fu, one)
	if den.Equal(new(field.Element).Zero()) == 1 {
		return nil, false
	}
	y := new(field.Element).Multiply(num, new(field.Element).Invert(den))
	enc := y.Bytes()
	enc[31] |= sign << 7
	p, err := new(edwards25519.Point).SetBytes(enc)
	if err != nil {
		return nil, false
	}
	return p, true
}

// Verify checks an XEdDSA signature over the concatenation of msg, the
// variant libsignal uses: the Edwards sign bit of the signer's key travels
// in the top bit of the signature.
func (k PublicKey) Verify(sig []byte, msg ...[]byte) bool {
	if len(sig) != SignatureSize {
		return false
	}
	a, ok := montgomeryToEdwards(k.u, sig[63]>>7)
	if !ok {
		return false
	}
	capA := a.Bytes()
	var s [64]byte
	copy(s[:32], sig[32:])
	s[31] &= 0x7F
	if s[31]&0xE0 != 0 {
		return false
	}
	ss, err := edwards25519.NewScalar().SetUniformBytes(s[:])
	if err != nil {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(capA)
	for _, m := range msg {
		h.Write(m)
	}
	hs, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		return false
	}
	minusA := new(edwards25519.Point).Negate(a)
	r := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(hs, minusA, ss)
	return subtle.ConstantTimeCompare(r.Bytes(), sig[:32]) == 1
}

// PrivateKey is a clamped Curve25519 private key. It cannot be compared
// with == and never prints its value.
type PrivateKey struct {
	_ [0]func()
	k [32]byte
}

// GeneratePrivateKey makes a new private key from rand.
func GeneratePrivateKey(rand io.Reader) (PrivateKey, error) {
	var b [32]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return NewPrivateKey(b[:])
}

// NewPrivateKey makes a private key from 32 bytes, clamping them.
func NewPrivateKey(b []byte) (PrivateKey, error) {
	if len(b) != PrivateKeySize {
		return PrivateKey{}, fmt.Errorf("%w: private key is %d bytes, want 32", ErrInvalidKey, len(b))
	}
	var k PrivateKey
	copy(k.k[:], b)
	k.k[0] &= 248
	k.k[31] &= 127
	k.k[31] |= 64
	return k, nil
}

// Bytes is the 32-byte private key, for storage only.
func (k PrivateKey) Bytes() []byte { return append([]byte(nil), k.k[:]...) }

// String never shows the key.
func (PrivateKey) String() string { return "PrivateKey(redacted)" }

// GoString never shows the key (%#v).
func (PrivateKey) GoString() string { return "protocol.PrivateKey(redacted)" }

// Public derives the public key.
func (k PrivateKey) Public() PublicKey {
	u, err := curve25519.X25519(k.k[:], curve25519.Basepoint)
	if err != nil {
		panic("protocol: X25519 with the base point failed: " + err.Error())
	}
	var p PublicKey
	copy(p.u[:], u)
	return p
}

// Agree computes the X25519 shared secret with a public key. A public key
// of small order (an all-zero result) is refused.
func (k PrivateKey) Agree(pub PublicKey) ([]byte, error) {
	s, err := curve25519.X25519(k.k[:], pub.u[:])
	if err != nil {
		return nil, fmt.Errorf("%w: key agreement: %v", ErrInvalidKey, err)
	}
	return s, nil
}

// Sign makes an XEdDSA signature over the concatenation of msg that
// libsignal's verify accepts (see PublicKey.Verify).
func (k PrivateKey) Sign(rand io.Reader, msg ...[]byte) ([]byte, error) {
	var random [64]byte
	if _, err := io.ReadFull(rand, random[:]); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	var wide [64]byte
	copy(wide[:], k.k[:])
	a, err := edwards25519.NewScalar().SetUniformBytes(wide[:])
	if err != nil {
		return nil, err
	}
	capA := new(edwards25519.Point).ScalarBaseMult(a).Bytes()
	signBit := capA[31] & 0x80

	h1 := sha512.New()
	prefix := [32]byte{0xFE}
	for i := 1; i < 32; i++ {
		prefix[i] = 0xFF
	}
	h1.Write(prefix[:])
	h1.Write(k.k[:])
	for _, m := range msg {
		h1.Write(m)
	}
	h1.Write(random[:])
	r, err := edwards25519.NewScalar().SetUniformBytes(h1.Sum(nil))
	if err != nil {
		return nil, err
	}
	capR := new(edwards25519.Point).ScalarBaseMult(r).Bytes()

	h2 := sha512.New()
	h2.Write(capR)
	h2.Write(capA)
	for _, m := range msg {
		h2.Write(m)
	}
	h, err := edwards25519.NewScalar().SetUniformBytes(h2.Sum(nil))
	if err != nil {
		return nil, err
	}
	s := edwards25519.NewScalar().MultiplyAdd(h, a, r)
	sig := make([]byte, 0, SignatureSize)
	sig = append(sig, capR...)
	sig = append(sig, s.Bytes()...)
	sig[63] = sig[63]&0x7F | signBit
	return sig, nil
}

// KeyPair is a Curve25519 key pair.
type KeyPair struct {
	Public  PublicKey
	Private PrivateKey
}

// GenerateKeyPair makes a new key pair from rand.
func GenerateKeyPair(rand io.Reader) (KeyPair, error) {
	priv, err := GeneratePrivateKey(rand)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Public: priv.Public(), Private: priv}, nil
}

// KeyPairFromPrivate rebuilds a key pair from a stored private key.
func KeyPairFromPrivate(b []byte) (KeyPair, error) {
	priv, err := NewPrivateKey(b)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Public: priv.Public(), Private: priv}, nil
}

// IdentityKeyPair is an account's long-term identity: its public half is
// what contacts pin and what safety numbers are computed from.
type IdentityKeyPair = KeyPair
