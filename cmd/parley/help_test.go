package main_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestHelpAndVersion: help is an answer, not an error (exit 0, on stdout),
// for parley and for each command; the command list names every command;
// both binaries say which build they are; a bad flag to parleyd serve is
// one line, not a page of usage.
func TestHelpAndVersion(t *testing.T) {
	u := newUser(t, "http://127.0.0.1:1", 0)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, errs, code := u.run("", args...)
		if code != 0 || !strings.Contains(out, "usage: parley") {
			t.Errorf("parley %v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	out, _, _ := u.run("", "help")
	for _, cmd := range []string{"updateGroup", "quitGroup", "listGroups", "send -g", "version", "sendTyping", "daemon", "jsonRpc", "sendReceipt", "listContacts", "getUserStatus", "listAccounts", "updateAccount", "setPush", "removePush"} {
		if !strings.Contains(out, "  "+cmd) {
			t.Errorf("parley help does not list %q", cmd)
		}
	}
	for _, cmd := range []string{"send", "receive", "updateGroup", "trust"} {
		out, errs, code := u.run("", cmd, "--help")
		if code != 0 || !strings.Contains(out, "usage: parley [global options] "+cmd) || strings.Contains(errs, "help requested") {
			t.Errorf("parley %s --help: exit %d\n%s%s", cmd, code, out, errs)
		}
	}
	if out, errs, code := u.run("", "version"); code != 0 || !strings.HasPrefix(out, "parley ") {
		t.Errorf("parley version: exit %d %q %q", code, out, errs)
	}
	if b, err := exec.Command(parleydBin, "version").Output(); err != nil || !strings.HasPrefix(string(b), "parleyd ") {
		t.Errorf("parleyd version: %q %v", b, err)
	}
	b, err := exec.Command(parleydBin, "serve", "--bogus").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("parleyd serve --bogus: %v", err)
	}
	if lines := strings.Count(strings.TrimSpace(string(b)), "\n") + 1; lines != 1 || !strings.Contains(string(b), "--help") {
		t.Errorf("parleyd serve --bogus printed %d lines:\n%s", lines, b)
	}
}

// The client shares only package wire with the relay (and internal/caroots,
// which loads a CA file for either): no server package is linked into
// parley, so client and server evolve apart and meet only at the wire formats.
func TestNoServerPackagesInTheClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, "github.com/parleyhq/parley/")
		if !ok {
			continue
		}
		top, _, _ := strings.Cut(rest, "/")
		if rest == "internal/caroots" {
			continue
		}
		switch top {
		case "cmd", "cli", "protocol", "wire", "phone", "safetynumber", "version":
		default:
			t.Errorf("parley links the relay's %s", pkg)
		}
	}
}
