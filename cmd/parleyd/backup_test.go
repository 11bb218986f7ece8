package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/store/postgres/pgtest"
)

// TestBackupRestoreSQLite: `parleyd admin backup` copies the embedded
// database while the relay serves; a fresh relay started on the copy (with
// the same root secret) delivers the envelopes that were queued and its
// audit log verifies.
func TestBackupRestoreSQLite(t *testing.T) {
	dir := t.TempDir()
	numbers := []string{"--test-number", "+15555550100=123456", "--test-number", "+15555550101=123456"}
	p := start(t, nil, append([]string{"--data-dir", dir}, numbers...)...)
	alice, bob := registerDevice(t, p, "+15555550100"), registerDevice(t, p, "+15555550101")
	for _, text := range []string{"queued one", "queued two"} {
		if st, err := sendText(p, alice, bob, text, "k-"+strings.ReplaceAll(text, " ", "-")); st != 200 || err != nil {
			t.Fatalf("send: %d %v", st, err)
		}
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out, code := adminRun(t, nil, "backup", backup, "--data-dir", dir); code != 0 || !strings.Contains(out, "backup written") {
		t.Fatalf("backup while serving: %d %s", code, out)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if out, code := adminRun(t, nil, "backup", backup, "--data-dir", dir); code == 0 {
		t.Errorf("a backup replaced an existing file: %s", out)
	}
	p.stop()

	// Restore: the copy and the root secret into a new data directory.
	restored := t.TempDir()
	b, _ := os.ReadFile(backup)
	os.WriteFile(filepath.Join(restored, "parley.db"), b, 0o600)
	key, _ := os.ReadFile(filepath.Join(dir, "root.key"))
	os.WriteFile(filepath.Join(restored, "root.key"), key, 0o600)
	q := start(t, nil, append([]string{"--data-dir", restored}, numbers...)...)
	expectQueued(t, q, bob, "queued one", "queued two")
	if out, code := adminRun(t, nil, "audit", "verify", "--data-dir", restored); code != 0 {
		t.Errorf("audit verify on the restored relay: %d %s", code, out)
	}
}

// TestBackupRestorePostgres: the documented pg_dump and pg_restore move a
// relay's database to a new one; a relay started on it delivers what was
// queued and its audit log verifies.
func TestBackupRestorePostgres(t *testing.T) {
	pgDump, pgRestore := pgTool(t, "pg_dump"), pgTool(t, "pg_restore")
	src, dst := pgtest.Database(t), pgtest.Database(t)
	secret := rootSecretFile(t)
	p := start(t, []string{testNumbers}, "--database-url", src, "--secret-file", secret)
	alice, bob := registerDevice(t, p, "+15555550100"), registerDevice(t, p, "+15555550101")
	sendText(p, alice, bob, "queued in postgres", "k-pg")
	dump := filepath.Join(t.TempDir(), "parley.dump")
	if out, err := exec.Command(pgDump, "--format=custom", "--file", dump, src).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	p.stop()
	if out, err := exec.Command(pgRestore, "--no-owner", "--dbname", dst, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	q := start(t, []string{testNumbers}, "--database-url", dst, "--secret-file", secret)
	expectQueued(t, q, bob, "queued in postgres")
	if out, code := adminRun(t, nil, "audit", "verify", "--database-url", dst, "--secret-file", secret); code != 0 {
		t.Errorf("audit verify on the restored database: %d %s", code, out)
	}
	if out, code := adminRun(t, nil, "backup", filepath.Join(t.TempDir(), "x"), "--database-url", dst, "--secret-file", secret); code == 0 || !strings.Contains(out, "pg_dump") {
		t.Errorf("admin backup on PostgreSQL: %d %s", code, out)
	}
}

// pgTool finds a PostgreSQL client program (Debian keeps them versioned).
func pgTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name); len(m) > 0 {
		return m[len(m)-1]
	}
	if os.Getenv("PARLEY_TEST_POSTGRES_REQUIRED") != "" {
		t.Fatalf("%s not found", name)
	}
	t.Skipf("%s not found", name)
	return ""
}

// expectQueued connects d's socket and waits for the texts.
func expectQueued(t *testing.T, p *proc, d device, texts ...string) {
	t.Helper()
	ws, err := dialSocket(p, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	r := received{ids: map[string]map[string]bool{}}
	go r.receive(ws)
	waitCond(t, 10*time.Second, "the queued envelopes", func() bool {
		for _, text := range texts {
			if !r.has(text) {
				return false
			}
		}
		return true
	})
}
