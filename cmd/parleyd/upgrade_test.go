package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// previousRelease is the commit whose parleyd the upgrade test starts
// from: schema 0012, before sealed sender (0013) and push (0014). Move it
// to the last tag once releases are tagged.
const previousRelease = "e89e2f5"

// buildPrevious builds previousRelease's parleyd from this repository's
// history.
func buildPrevious(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not found")
	}
	shallow := exec.Command("git", "rev-parse", "--is-shallow-repository")
	shallow.Dir = "../.."
	if out, _ := shallow.Output(); strings.TrimSpace(string(out)) == "true" {
		if err := exec.Command("git", "-C", "../..", "cat-file", "-e", previousRelease+"^{commit}").Run(); err != nil {
			t.Skipf("a shallow clone without %s: fetch its history to run the upgrade test", previousRelease)
		}
	}
	src := t.TempDir()
	tarball := filepath.Join(t.TempDir(), "previous.tar")
	archive := exec.Command("git", "archive", "--format=tar", "--output", tarball, previousRelease)
	archive.Dir = "../.."
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v %s (a shallow clone lacks it)", previousRelease, err, out)
	}
	if out, err := exec.Command("tar", "-x", "-C", src, "-f", tarball).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	bin := filepath.Join(src, "parleyd-previous")
	build := exec.Command("go", "build", "-o", bin, "./cmd/parleyd")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", previousRelease, err, out)
	}
	return bin
}

// TestUpgradeFromPreviousRelease: the previous release's parleyd fills a
// database (accounts, queued envelopes, audit entries); this parleyd
// migrates it, delivers every queued envelope, and its audit log verifies.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	previous := buildPrevious(t)
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			args := storageArgs(t, backend)
			env := []string{testNumbers}
			old := startBinary(t, previous, env, args...)
			alice, bob := registerDevice(t, old, "+15555550100"), registerDevice(t, old, "+15555550101")
			texts := []string{"sent before the upgrade", "and another"}
			for _, text := range texts {
				if st, err := sendText(old, alice, bob, text, "u-"+strings.ReplaceAll(text, " ", "-")); st != 200 || err != nil {
					t.Fatalf("send on the previous release: %d %v", st, err)
				}
			}
			old.stop()

			p := start(t, env, args...)
			expectQueued(t, p, bob, texts...)
			if st, err := sendText(p, bob, alice, "after the upgrade", "u-after"); st != 200 || err != nil {
				t.Fatalf("send after the upgrade: %d %v", st, err)
			}
			if out, code := adminRun(t, env, append([]string{"audit", "verify"}, args...)...); code != 0 {
				t.Errorf("audit verify after the upgrade: %d %s", code, out)
			}
		})
	}
}
