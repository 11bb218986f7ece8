package secrets

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "root.key")
	r1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate = %v, created=%v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	r2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate = %v, created=%v", err, created)
	}
	if !bytes.Equal(r1.Derive("a"), r2.Derive("a")) {
		t.Error("reloaded secret derives different keys")
	}
	if bytes.Equal(r1.Derive("a"), r1.Derive("b")) {
		t.Error("different purposes derive the same key")
	}
	if strings.Contains(r1.String(), string(r1.key)) || !strings.Contains(r1.String(), "redacted") {
		t.Error("String does not redact")
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, make([]byte, RootSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(loose); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable secret: err = %v", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(short); err == nil {
		t.Error("short secret accepted")
	}
	if _, _, err := LoadOrCreate(short); err == nil {
		t.Error("LoadOrCreate replaced or accepted a bad existing secret")
	}
}
