package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlainKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	k, err := Create(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	sealed := k.Seal([]byte("secret"), []byte("place"))
	k2, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k2.Open(sealed, []byte("place")); err != nil || string(p) != "secret" {
		t.Fatalf("reloaded key: %q %v", p, err)
	}
	if _, err := k2.Open(sealed, []byte("elsewhere")); err == nil {
		t.Error("a value moved to another place opened")
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k2.Open(bad, []byte("place")); err == nil {
		t.Error("an altered value opened")
	}
	if _, err := k2.Open(sealed[:10], []byte("place")); err == nil {
		t.Error("a truncated value opened")
	}
	if _, err := Create(path, nil); err == nil {
		t.Error("Create overwrote an existing key file")
	}
}

func TestPassphrase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	k, err := Create(path, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := k.Seal([]byte("secret"), nil)
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "argon2id") {
		t.Fatalf("key file: %s", b)
	}
	if _, err := Load(path, nil); !errors.Is(err, ErrNeedPassphrase) {
		t.Errorf("no passphrase: %v", err)
	}
	if _, err := Load(path, func() ([]byte, error) { return []byte("wrong"), nil }); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
	k2, err := Load(path, func() ([]byte, error) { return []byte("correct horse"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k2.Open(sealed, nil); err != nil || string(p) != "secret" {
		t.Fatal(p, err)
	}
	// Removing the passphrase rewraps the same data key.
	if err := k2.Rewrite(path, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), "argon2id") {
		t.Errorf("still protected after removing the passphrase: %s", b)
	}
	k3, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k3.Open(sealed, nil); err != nil || string(p) != "secret" {
		t.Fatal(p, err)
	}
}

func TestCorruptKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for i, body := range []string{"", "parley-key-v1", "parley-key-v1 plain !!!", "parley-key-v1 plain AAAA",
		"other plain " + strings.Repeat("A", 44), "parley-key-v1 argon2id 3 99999999 4 AAAAAAAAAAAAAAAAAAAAAA== AAAA",
		"parley-key-v1 argon2id 0 65536 4 AAAAAAAAAAAAAAAAAAAAAA== AAAA", "parley-key-v1 argon2id 3 65536 4 AAAA AAAA"} {
		path := filepath.Join(dir, "key"+string(rune('a'+i)))
		os.WriteFile(path, []byte(body), 0o600)
		if _, err := Load(path, func() ([]byte, error) { return []byte("x"), nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: %v, want ErrCorrupt", body, err)
		}
	}
}
