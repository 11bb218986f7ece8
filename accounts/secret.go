package accounts

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Sizes of secrets and their stored hashes.
const (
	saltSize   = 16
	HashedSize = saltSize + sha256.Size // salt || HMAC, as stored

	MinCredentialLen = 32  // base64url characters (≥ 192 bits)
	MaxCredentialLen = 128 // base64url characters
	LockTokenSize    = 32  // bytes
)

// ErrBadCredential reports a device credential that is not 32–128 base64url
// characters.
var ErrBadCredential = fmt.Errorf("credential must be %d to %d base64url characters (a random secret of at least 24 bytes)", MinCredentialLen, MaxCredentialLen)

// CheckCredentialFormat validates a device credential chosen by a client.
func CheckCredentialFormat(c string) error {
	if len(c) < MinCredentialLen || len(c) > MaxCredentialLen {
		return ErrBadCredential
	}
	for i := range len(c) {
		ch := c[i]
		if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return ErrBadCredential
		}
	}
	return nil
}

// secretHasher stores secrets as salt || HMAC-SHA256(key, salt || secret).
// The server key means a database dump alone does not allow offline guessing
// (which matters for registration-lock tokens derived from short PINs).
type secretHasher struct{ key []byte }

func (h secretHasher) hash(secret []byte) ([]byte, error) {
	salt := make([]byte, saltSize, HashedSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("salt: %w", err)
	}
	return h.mac(salt, secret), nil
}

func (h secretHasher) mac(salt, secret []byte) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write(salt)
	m.Write(secret)
	return m.Sum(append([]byte(nil), salt...))
}

// check compares in constant time. A malformed stored value never matches,
// but costs the same work.
func (h secretHasher) check(stored, secret []byte) bool {
	salt := make([]byte, saltSize)
	if len(stored) == HashedSize {
		copy(salt, stored)
	}
	return hmac.Equal(h.mac(salt, secret), stored)
}

var errShortKey = errors.New("accounts: hashing key must be at least 32 bytes")
