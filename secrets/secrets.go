// Package secrets holds the relay's root secret, kept outside the database,
// and derives the independent keys each feature needs from it.
//
// Keeping one root secret in a file (generated on first start for the
// embedded default, provisioned by the operator for shared deployments) means
// a database dump alone reveals no phone numbers and forges no codes.
package secrets

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RootSize is the length of the root secret in bytes.
const RootSize = 32

// Root is the relay's root secret. Its String never reveals it.
type Root struct {
	key []byte
}

// New wraps key, which must be exactly RootSize bytes.
func New(key []byte) (*Root, error) {
	if len(key) != RootSize {
		return nil, fmt.Errorf("root secret must be %d bytes, got %d", RootSize, len(key))
	}
	return &Root{key: append([]byte(nil), key...)}, nil
}

// Load reads the root secret from path. The file holds exactly RootSize raw
// bytes and must not be readable by group or others.
func Load(path string) (*Root, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load root secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load root secret: %s is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load root secret: %w", err)
	}
	r, err := New(b)
	if err != nil {
		return nil, fmt.Errorf("load root secret from %s: %w", path, err)
	}
	return r, nil
}

// LoadOrCreate loads the root secret from path, first generating one from
// crypto/rand (file mode 0600, created exclusively) if the file does not exist.
// created reports whether a new secret was written.
func LoadOrCreate(path string) (root *Root, created bool, err error) {
	r, err := Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return r, false, err
	}
	key := make([]byte, RootSize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("generate root secret: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create root secret: %w", err)
	}
	// Write a temporary file and hard-link it into place, so a concurrent
	// reader never sees a partly written secret and two starters agree.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".root-secret-*")
	if err != nil {
		return nil, false, fmt.Errorf("create root secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(key); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("write root secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("write root secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("write root secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race
			r, err := Load(path)
			return r, false, err
		}
		return nil, false, fmt.Errorf("create root secret: %w", err)
	}
	r, err = New(key)
	return r, true, err
}

// Derive returns a 32-byte key for one purpose (HKDF-SHA256, RFC 5869, with
// the purpose as info). Different purposes give independent keys.
func (r *Root) Derive(purpose string) []byte {
	k, err := hkdf.Key(sha256.New, r.key, nil, "parley "+purpose, 32)
	if err != nil { // only for lengths HKDF cannot produce; 32 always works
		panic(fmt.Sprintf("derive key: %v", err))
	}
	return k
}

// String redacts the secret.
func (r *Root) String() string { return "secrets.Root(redacted)" }
