package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/parleyhq/parley/store/sqlite"
)

var checkpointLine = regexp.MustCompile(`"msg":"audit checkpoint","head":"([0-9]+:[0-9a-f]*)"`)

// TestAuditCheckpointShowsTruncation: parleyd writes the audit log's head
// to its server log at start and at shutdown; `admin audit verify
// --expect-head` with that head catches entries cut from the end, and an
// emptied log, which plain verify cannot see; a wrong root secret is
// reported as such (exit 3), and serve refuses to start with it.
func TestAuditCheckpointShowsTruncation(t *testing.T) {
	dir := t.TempDir()
	p := start(t, []string{testNumbers}, "--data-dir", dir, "--audit-checkpoint-interval", "1h")
	registerDevice(t, p, "+15555550100")
	registerDevice(t, p, "+15555550101")
	p.stop()
	heads := checkpointLine.FindAllStringSubmatch(p.logs.String(), -1)
	if len(heads) < 2 || heads[0][1] != "0:" {
		t.Fatalf("checkpoint lines at start and shutdown: %q\n%s", heads, p.logs)
	}
	head := heads[len(heads)-1][1]
	if !strings.HasPrefix(head, "2:") {
		t.Fatalf("head at shutdown %q, want entry 2 (two registrations)", head)
	}
	flags := []string{"--data-dir", dir}
	verify := func(extra ...string) (string, int) {
		return adminRun(t, nil, append(append([]string{"audit", "verify"}, flags...), extra...)...)
	}
	if out, code := verify("--expect-head", head); code != 0 || !strings.Contains(out, "still holds checkpoint "+head) {
		t.Fatalf("intact log: %d %s", code, out)
	}
	if out, code := verify("--expect-head", "2:zz"); code != 2 {
		t.Fatalf("malformed head: %d %s", code, out)
	}

	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ExecRaw(context.Background(), `DELETE FROM audit_log WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if out, code := verify(); code != 0 {
		t.Fatalf("plain verify of a log cut at the end (a valid chain): %d %s", code, out)
	}
	if out, code := verify("--expect-head", head); code != 1 || !strings.Contains(out, "removed from the end") {
		t.Fatalf("last entry deleted: %d %s", code, out)
	}

	// Another root secret is a wrong key, not tampering, and serve refuses it.
	other := filepath.Join(t.TempDir(), "other.key")
	if out, err := exec.Command(binary, "init-secret", other).CombinedOutput(); err != nil {
		t.Fatalf("init-secret: %v %s", err, out)
	}
	out, code := adminRun(t, nil, "audit", "verify", "--data-dir", dir, "--secret-file", other)
	if code != 3 || !strings.Contains(out, "wrong root secret") || strings.Contains(out, "altered") {
		t.Fatalf("verify with another secret: %d %s", code, out)
	}
	cmd := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", dir, "--secret-file", other)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "wrong root secret") {
		t.Fatalf("serve with another secret: %v %s", err, out)
	}

	db, err = sqlite.Open(context.Background(), filepath.Join(dir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ExecRaw(context.Background(), `DELETE FROM audit_log`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if out, code := verify("--expect-head", head); code != 1 || !strings.Contains(out, "log is empty") {
		t.Fatalf("every entry deleted: %d %s", code, out)
	}
}
