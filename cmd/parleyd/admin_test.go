package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/store/sqlite"
)

func adminRun(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"admin"}, args...)...)
	cmd.Env = append(cmd.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestAdminAndAudit: security-relevant requests land in the audit log
// (ids only, no numbers), the chain verifies, operator actions work and are
// audited, the configuration is shown with secrets redacted, and a changed
// entry is caught by `audit verify`.
func TestAdminAndAudit(t *testing.T) {
	dir := t.TempDir()
	p := start(t, nil, "--data-dir", dir, "--test-number", "+15555550100=123456", "--test-number", "+15555550101=123456")
	alice := registerDevice(t, p, "+15555550100")
	bob := registerDevice(t, p, "+15555550101")
	if st, body := p.do("PUT", "/v1/accounts/me/registration-lock", alice.user, alice.pass, map[string]any{"token": b64(make([]byte, 32))}); st != 204 {
		t.Fatalf("set lock: %d %v", st, body)
	}
	member, admin := newSecret(), newSecret()
	if st, body := p.do("POST", "/v1/attachments/buckets", alice.user, alice.pass, map[string]any{
		"member_secret_hash": hash64(member), "admin_secret_hash": hash64(admin)}); st != 201 {
		t.Fatalf("bucket: %d %v", st, body)
	}
	flags := []string{"--data-dir", dir}

	out, code := adminRun(t, nil, append([]string{"audit", "export"}, flags...)...)
	if code != 0 {
		t.Fatalf("export: %d %s", code, out)
	}
	var kinds []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Kind    string `json:"kind"`
			Account string `json:"account"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("export line %q: %v", l, err)
		}
		kinds = append(kinds, e.Kind)
	}
	want := "account.registered account.registered account.registration_lock_set bucket.created"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("audit kinds %q, want %q", got, want)
	}
	if strings.Contains(out, "5555550100") || strings.Contains(out, "127.0.0.1") {
		t.Fatal("the audit log holds a phone number or an IP address")
	}
	if out, code := adminRun(t, nil, append([]string{"audit", "verify"}, flags...)...); code != 0 || !strings.Contains(out, "4 entries") {
		t.Fatalf("verify: %d %s", code, out)
	}

	if out, code := adminRun(t, nil, append([]string{"revoke-device", alice.account, "1"}, flags...)...); code != 1 || !strings.Contains(out, "delete-account") {
		t.Fatalf("revoking a primary device: %d %s", code, out)
	}
	if out, code := adminRun(t, nil, append([]string{"delete-account", bob.account}, flags...)...); code != 0 {
		t.Fatalf("delete-account: %d %s", code, out)
	}
	if st, _ := p.do("GET", "/v1/accounts/me", bob.user, bob.pass, nil); st != 401 {
		t.Fatalf("deleted account still authenticates: %d", st)
	}
	if out, code := adminRun(t, nil, append([]string{"purge"}, flags...)...); code != 0 || !strings.Contains(out, "purged") || strings.Contains(out, "map[") {
		t.Fatalf("purge: %d %s", code, out)
	}
	if out, code := adminRun(t, nil, append([]string{"frobnicate"}, flags...)...); code != 2 {
		t.Fatalf("unknown command: %d %s", code, out)
	}
	out, code = adminRun(t, []string{"PARLEY_TWILIO_AUTH_TOKEN=supersecrettoken123"}, append([]string{"config",
		"--database-url", "postgres://parley:hunter2@db/parley"}, flags...)...)
	if code != 0 || strings.Contains(out, "supersecrettoken123") || strings.Contains(out, "hunter2") || !strings.Contains(out, "(redacted)") ||
		!strings.Contains(out, `"--message-retention": "720h0m0s"`) {
		t.Fatalf("config: %d %s", code, out)
	}
	out, _ = adminRun(t, nil, append([]string{"audit", "export", "--after", "4"}, flags...)...)
	if !strings.Contains(out, "admin.account_deleted") || !strings.Contains(out, "admin.purge") {
		t.Fatalf("operator actions not audited: %s", out)
	}

	// Someone with write access to the database edits an entry.
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.ExecRaw(context.Background(), `DROP TRIGGER audit_log_append_only`)
	if err := db.ExecRaw(context.Background(), `UPDATE audit_log SET account_id = '' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, code = adminRun(t, nil, append([]string{"audit", "verify"}, flags...)...)
	if code != 1 || !strings.Contains(out, "altered") || !bytes.Contains([]byte(out), []byte("entry 2")) {
		t.Fatalf("verify after tampering: %d %s", code, out)
	}
}
