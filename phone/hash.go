package phone

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
)

// HashSize is the length of a number hash in bytes.
const HashSize = sha256.Size

// Hash is the keyed pseudonym of a Number, the only form in which the relay
// stores numbers.
type Hash [HashSize]byte

// Hasher turns numbers into keyed hashes (HMAC-SHA256 under a server secret
// kept outside the database), so equal numbers match but a database dump
// cannot be reversed by enumerating the small space of phone numbers.
type Hasher struct {
	key []byte
}

// NewHasher returns a Hasher keyed with key, which must be at least 32 bytes.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < 32 {
		return nil, errors.New("phone hash key must be at least 32 bytes")
	}
	return &Hasher{key: append([]byte(nil), key...)}, nil
}

// Hash returns the keyed hash of n.
func (h *Hasher) Hash(n Number) Hash {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(n.e164))
	var out Hash
	m.Sum(out[:0])
	return out
}
