package sealedsender_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/google/uuid"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/sealedsender"
)

func newRoot(t testing.TB) *sealedsender.TrustRoot {
	t.Helper()
	r, err := sealedsender.GenerateTrustRoot(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newKey(t testing.TB, r *sealedsender.TrustRoot, id uint32) *sealedsender.ServerKey {
	t.Helper()
	k, err := r.NewServerKey(rand.Reader, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFilesAndIssue: both files are written 0600 and read back; a sender
// certificate issued under the server key names the account, device and
// identity key, no number, validates under the trust root until it
// expires, one lifetime after it was issued.
func TestFilesAndIssue(t *testing.T) {
	dir := t.TempDir()
	root := newRoot(t)
	rootPath := filepath.Join(dir, "root.json")
	if err := root.WriteFile(rootPath); err != nil {
		t.Fatal(err)
	}
	root2, err := sealedsender.LoadTrustRoot(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	if !root2.Public().Equal(root.Public()) {
		t.Fatal("trust root changed on the way through its file")
	}
	key := newKey(t, root2, 7)
	keyPath := filepath.Join(dir, "server.json")
	if err := key.WriteFile(keyPath); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{rootPath, keyPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", p, err, fi.Mode().Perm())
		}
	}
	loaded, err := sealedsender.LoadServerKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.KeyID() != 7 || !loaded.TrustRoot().Equal(root.Public()) || !bytes.Equal(loaded.Certificate().Bytes(), key.Certificate().Bytes()) {
		t.Fatalf("loaded %v, want %v", loaded, key)
	}

	iss, err := sealedsender.NewIssuer(loaded, 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if iss.KeyID() != 7 || !iss.TrustRoot().Equal(root.Public()) || iss.Lifetime() != 3*time.Hour {
		t.Errorf("issuer: key id %d, root %v, lifetime %v", iss.KeyID(), iss.TrustRoot(), iss.Lifetime())
	}
	identity, _ := protocol.GenerateKeyPair(rand.Reader)
	account := uuid.New()
	now := time.UnixMilli(1_750_000_000_123).Add(456 * time.Microsecond)
	b, expires, err := iss.Issue(account, 3, identity.Public.Bytes(), now)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.UnixMilli(now.Add(3 * time.Hour).UnixMilli()); !expires.Equal(want) {
		t.Errorf("expires %v, want %v", expires, want)
	}
	c, err := protocol.ParseSenderCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.SenderUUID != account.String() || c.SenderDevice != 3 || c.SenderE164 != "" || !c.IdentityKey.Equal(identity.Public) ||
		!c.Expires.Equal(expires) || c.Signer.KeyID != 7 {
		t.Errorf("certificate: %+v", c)
	}
	if !c.Validate(root.Public(), now) || !c.Validate(root.Public(), expires) {
		t.Error("certificate does not validate under the trust root while it is valid")
	}
	if c.Validate(root.Public(), expires.Add(time.Millisecond)) {
		t.Error("certificate validates after it expired")
	}
	if c.Validate(newRoot(t).Public(), now) {
		t.Error("certificate validates under another trust root")
	}
}

// TestWriteRefusesOverwrite: neither file ever replaces an existing one.
func TestWriteRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	root := newRoot(t)
	path := filepath.Join(dir, "exists")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func(string) error{
		"trust root": root.WriteFile,
		"server key": newKey(t, root, 1).WriteFile,
	} {
		if err := write(path); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "not replacing") {
			t.Errorf("%s over an existing file: %v", name, err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("%s replaced the existing file", name)
		}
	}
}

// TestRevokedKeyID: the id libsignal refuses whatever signs it is refused
// when the certificate is made.
func TestRevokedKeyID(t *testing.T) {
	if _, err := newRoot(t).NewServerKey(rand.Reader, 0xDEADC357); !errors.Is(err, sealedsender.ErrRevokedKeyID) {
		t.Errorf("revoked key id: %v", err)
	}
}

// edit rewrites one member of a file's JSON object.
func edit(t *testing.T, file []byte, member string, value any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(file, &m); err != nil {
		t.Fatal(err)
	}
	if value == nil {
		delete(m, member)
	} else {
		m[member] = value
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLoadServerKeyRefuses: every way a server key file can be wrong is
// refused with an error that names that problem.
func TestLoadServerKeyRefuses(t *testing.T) {
	root := newRoot(t)
	key := newKey(t, root, 5)
	good := key.Marshal()
	other := newKey(t, newRoot(t), 5) // the same id under another root
	sibling := newKey(t, root, 6)     // another key of the same root
	b64 := base64.StdEncoding.EncodeToString
	otherCert := b64(other.Certificate().Bytes())
	var otherPriv map[string]string
	_ = json.Unmarshal(edit(t, sibling.Marshal(), "key_id", nil), &otherPriv)

	cases := []struct {
		name string
		file []byte
		mode os.FileMode
		want error
		text string
	}{
		{"group-readable", good, 0o640, sealedsender.ErrInsecureFile, "chmod 600"},
		{"world-readable", good, 0o604, sealedsender.ErrInsecureFile, "chmod 600"},
		{"group-writable", good, 0o620, sealedsender.ErrInsecureFile, "chmod 600"},
		{"signed by another root", edit(t, good, "certificate", otherCert), 0o600, sealedsender.ErrUntrusted, "does not validate under the file's trust_root"},
		{"trust root of another operator", edit(t, good, "trust_root", b64(other.TrustRoot().Bytes())), 0o600, sealedsender.ErrUntrusted, "trust_root"},
		{"private key of another certificate", edit(t, good, "private_key", otherPriv["private_key"]), 0o600, sealedsender.ErrKeyMismatch, "private_key is not the key"},
		{"key id not the certificate's", edit(t, good, "key_id", 6), 0o600, sealedsender.ErrKeyIDMismatch, "key_id 6, certificate 5"},
		{"key id missing", edit(t, good, "key_id", nil), 0o600, sealedsender.ErrMalformed, "key_id is missing"},
		{"key id negative", edit(t, good, "key_id", -1), 0o600, sealedsender.ErrMalformed, "/key_id"},
		{"certificate missing", edit(t, good, "certificate", nil), 0o600, sealedsender.ErrMalformed, "certificate is missing"},
		{"certificate garbage", edit(t, good, "certificate", b64([]byte("not a certificate"))), 0o600, sealedsender.ErrMalformed, "certificate"},
		{"private key short", edit(t, good, "private_key", b64(make([]byte, 31))), 0o600, sealedsender.ErrMalformed, "private_key is 31 bytes"},
		{"trust root raw 32 bytes", edit(t, good, "trust_root", b64(make([]byte, 32))), 0o600, sealedsender.ErrMalformed, "trust_root is 32 bytes"},
		{"URL-safe base64", edit(t, good, "certificate", strings.NewReplacer("+", "-", "/", "_").Replace(otherCert)+"_-"), 0o600, sealedsender.ErrMalformed, "certificate is not standard padded base64"},
		{"base64 with a line break", edit(t, good, "certificate", otherCert[:8]+"\n"+otherCert[8:]), 0o600, sealedsender.ErrMalformed, "not standard padded base64"},
		{"unknown member", edit(t, good, "not_after", 1), 0o600, sealedsender.ErrMalformed, "invalid JSON"},
		{"duplicate member", append([]byte(`{"key_id":5,`), good[1:]...), 0o600, sealedsender.ErrMalformed, "invalid JSON"},
		{"not JSON", []byte("key_id=5\n"), 0o600, sealedsender.ErrMalformed, "invalid JSON"},
		{"empty", nil, 0o600, sealedsender.ErrMalformed, "invalid JSON"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			_, err := sealedsender.LoadServerKey(path)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v, want %v mentioning %q and the path", err, c.want, c.text)
			}
			if err != nil && strings.Contains(err.Error(), otherPriv["private_key"]) {
				t.Error("the error quotes a private key")
			}
		})
	}
	if _, err := sealedsender.LoadServerKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestLoadTrustRootRefuses: an exposed trust root file or one whose halves
// do not belong together is refused.
func TestLoadTrustRootRefuses(t *testing.T) {
	root, other := newRoot(t), newRoot(t)
	b64 := base64.StdEncoding.EncodeToString
	dir := t.TempDir()
	for i, c := range []struct {
		name string
		file []byte
		mode os.FileMode
		want error
	}{
		{"group-readable", root.Marshal(), 0o640, sealedsender.ErrInsecureFile},
		{"halves of two roots", edit(t, root.Marshal(), "public_key", b64(other.Public().Bytes())), 0o600, sealedsender.ErrRootMismatch},
		{"public key missing", edit(t, root.Marshal(), "public_key", nil), 0o600, sealedsender.ErrMalformed},
		{"a server key file", newKey(t, root, 1).Marshal(), 0o600, sealedsender.ErrMalformed},
	} {
		path := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(path, c.file, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		if _, err := sealedsender.LoadTrustRoot(path); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

// TestIssueRefuses: requests no certificate can honestly carry.
func TestIssueRefuses(t *testing.T) {
	iss, err := sealedsender.NewIssuer(newKey(t, newRoot(t), 1), sealedsender.DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := protocol.GenerateKeyPair(rand.Reader)
	for _, c := range []struct {
		name     string
		account  uuid.UUID
		device   int
		identity []byte
	}{
		{"device 0", uuid.New(), 0, id.Public.Bytes()},
		{"device 128", uuid.New(), 128, id.Public.Bytes()},
		{"no account", uuid.Nil, 1, id.Public.Bytes()},
		{"raw 32-byte key", uuid.New(), 1, id.Public.Raw()},
		{"no key", uuid.New(), 1, nil},
	} {
		if _, _, err := iss.Issue(c.account, c.device, c.identity, time.Now()); !errors.Is(err, sealedsender.ErrInvalid) {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
	for _, d := range []time.Duration{0, 59 * time.Second, 7*24*time.Hour + 1} {
		if _, err := sealedsender.NewIssuer(newKey(t, newRoot(t), 1), d); err == nil {
			t.Errorf("lifetime %v accepted", d)
		}
	}
	if _, err := sealedsender.NewIssuer(nil, time.Hour); err == nil {
		t.Error("issuer without a key accepted")
	}
}

// TestNeverPrintsPrivateKeys: the key types print only public parts.
func TestNeverPrintsPrivateKeys(t *testing.T) {
	root := newRoot(t)
	key := newKey(t, root, 1)
	var rj, kj map[string]string
	_ = json.Unmarshal(root.Marshal(), &rj)
	_ = json.Unmarshal(edit(t, key.Marshal(), "key_id", nil), &kj)
	for _, s := range []string{fmt.Sprint(root), fmt.Sprintf("%+v %#v", root, root), fmt.Sprint(key), fmt.Sprintf("%+v %#v", key, key)} {
		for _, secret := range []string{rj["private_key"], kj["private_key"]} {
			raw, _ := base64.StdEncoding.DecodeString(secret)
			if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", raw)) || strings.Contains(s, fmt.Sprint(raw)) {
				t.Errorf("%q shows a private key", s)
			}
		}
	}
}

// FuzzParseServerKey: no input panics, and whatever parses survives a
// round trip through Marshal unchanged.
func FuzzParseServerKey(f *testing.F) {
	root := newRoot(f)
	f.Add(newKey(f, root, 1).Marshal())
	f.Add(root.Marshal())
	f.Add([]byte(`{"trust_root":"","key_id":1,"certificate":"","private_key":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := sealedsender.ParseServerKey(b)
		if err != nil {
			if !errors.Is(err, sealedsender.ErrMalformed) && !errors.Is(err, sealedsender.ErrUntrusted) &&
				!errors.Is(err, sealedsender.ErrKeyMismatch) && !errors.Is(err, sealedsender.ErrKeyIDMismatch) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, err := sealedsender.ParseServerKey(k.Marshal())
		if err != nil || !bytes.Equal(again.Marshal(), k.Marshal()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
