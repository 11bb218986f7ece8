// Package vault keeps the key that encrypts a parley account's secrets at
// rest, in a key file beside its database.
//
// The data key is 32 random bytes. The key file (mode 0600) holds it either
// as is, or wrapped with a key derived from the user's passphrase by
// argon2id, so that a copy of the account directory is useless without the
// passphrase. Values are sealed with XChaCha20-Poly1305 (random 24-byte
// nonces); the caller's associated data binds each value to its place.
// Changing the passphrase rewraps the data key; nothing else is re-encrypted.
package vault

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Argon2id parameters for new passphrases (RFC 9106's second recommended
// option: 64 MiB, 3 passes), recorded in the key file so they can change.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024 // KiB
	argonThreads = 4
)

const header = "parley-key-v1"

// Errors.
var (
	ErrWrongPassphrase = errors.New("wrong passphrase")
	ErrNeedPassphrase  = errors.New("the key file is protected by a passphrase; set PARLEY_PASSPHRASE or use --passphrase-file")
	ErrCorrupt         = errors.New("key file is corrupt")
)

// Key seals and opens values.
type Key struct {
	data  []byte
	aead  cipher.AEAD
	index []byte // HMAC key of Index, derived from data
}

func newKey(data []byte) (*Key, error) {
	a, err := chacha20poly1305.NewX(data)
	if err != nil {
		return nil, err
	}
	ik, err := hkdf.Key(sha256.New, data, nil, "parley at-rest index key", 32)
	if err != nil {
		return nil, err
	}
	return &Key{data: data, aead: a, index: ik}, nil
}

// Seal encrypts plaintext, binding it to aad.
func (k *Key) Seal(plaintext, aad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plaintext, aad)
}

// Index is a keyed hash of value for purpose: HMAC-SHA256 under a key
// derived from the data key (never the data key itself), so equal values
// can be found without storing them in the clear.
func (k *Key) Index(purpose string, value []byte) []byte {
	m := hmac.New(sha256.New, k.index)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(value)
	return m.Sum(nil)
}

// Open decrypts what Seal produced with the same aad.
func (k *Key) Open(ciphertext, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(ciphertext) < n+k.aead.Overhead() {
		return nil, errors.New("sealed value is truncated")
	}
	p, err := k.aead.Open(nil, ciphertext[:n], ciphertext[n:], aad)
	if err != nil {
		return nil, errors.New("sealed value does not authenticate (altered, moved, or another key)")
	}
	return p, nil
}

// Create generates a data key and writes it to path (which must not
// exist), wrapped under passphrase unless passphrase is empty.
func Create(path string, passphrase []byte) (*Key, error) {
	data := make([]byte, chacha20poly1305.KeySize)
	rand.Read(data)
	k, err := newKey(data)
	if err != nil {
		return nil, err
	}
	line, err := k.encode(passphrase)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(line)
	return k, errors.Join(err, f.Sync(), f.Close())
}

// Load reads the key file at path. passphrase is called only if the file
// is protected by one.
func Load(path string, passphrase func() ([]byte, error)) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 || f[0] != header {
		return nil, ErrCorrupt
	}
	switch {
	case f[1] == "plain" && len(f) == 3:
		data, err := base64.StdEncoding.DecodeString(f[2])
		if err != nil || len(data) != chacha20poly1305.KeySize {
			return nil, ErrCorrupt
		}
		return newKey(data)
	case f[1] == "argon2id" && len(f) == 7:
		var p [3]uint64
		for i := range p {
			if p[i], err = strconv.ParseUint(f[2+i], 10, 32); err != nil || p[i] == 0 {
				return nil, ErrCorrupt
			}
		}
		if p[1] > 4<<20 || p[0] > 100 || p[2] > 255 { // refuse a file that would exhaust memory or time
			return nil, ErrCorrupt
		}
		salt, err1 := base64.StdEncoding.DecodeString(f[5])
		wrapped, err2 := base64.StdEncoding.DecodeString(f[6])
		if err1 != nil || err2 != nil || len(salt) < 16 {
			return nil, ErrCorrupt
		}
		if passphrase == nil {
			return nil, ErrNeedPassphrase
		}
		pass, err := passphrase()
		if err != nil {
			return nil, err
		}
		kek, err := newKey(argon2.IDKey(pass, salt, uint32(p[0]), uint32(p[1]), uint8(p[2]), chacha20poly1305.KeySize))
		if err != nil {
			return nil, err
		}
		data, err := kek.Open(wrapped, []byte(header))
		if err != nil {
			return nil, ErrWrongPassphrase
		}
		return newKey(data)
	}
	return nil, ErrCorrupt
}

// Rewrite replaces the key file at path with k wrapped under passphrase
// (none if empty), atomically.
func (k *Key) Rewrite(path string, passphrase []byte) error {
	line, err := k.encode(passphrase)
	if err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return os.Rename(tmp, path)
}

func (k *Key) encode(passphrase []byte) (string, error) {
	if len(passphrase) == 0 {
		return fmt.Sprintf("%s plain %s\n", header, base64.StdEncoding.EncodeToString(k.data)), nil
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	kek, err := newKey(argon2.IDKey(passphrase, salt, argonTime, argonMemory, argonThreads, chacha20poly1305.KeySize))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s argon2id %d %d %d %s %s\n", header, argonTime, argonMemory, argonThreads,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(kek.Seal(k.data, []byte(header)))), nil
}
