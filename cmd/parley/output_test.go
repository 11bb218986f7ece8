package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOutputWording: what parley prints reads as sentences: register says
// what expires when, receipts name the message by when it was sent, and
// listGroups says Active: true like signal-cli.
func TestOutputWording(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	out := alice.ok("register")
	if strings.Contains(out, "valid until") || !strings.Contains(out, "a code expires after a few minutes") {
		t.Errorf("register: %q", out)
	}
	alice.ok("verify", code)
	bob.register()
	alice.ok("send", "-m", "hello", bob.number)
	bob.ok("receive", "--timeout", "1")
	if got := alice.ok("receive", "--timeout", "1"); !strings.Contains(got, "delivery receipt for your message of ") {
		t.Errorf("receipt line: %q", got)
	}
	alice.ok("updateGroup", "-n", "team", "-m", bob.number)
	if got := alice.ok("listGroups"); !strings.Contains(got, "Active: true") {
		t.Errorf("listGroups: %q", got)
	}
}

// TestAttachmentsPerAccount: without --output, received files go to the
// receiving account's own folder, not one shared by every account of the
// config directory.
func TestAttachmentsPerAccount(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	bob.config = alice.config // two accounts in one config directory
	alice.register()
	bob.register()
	file := filepath.Join(t.TempDir(), "note.txt")
	if err := os.WriteFile(file, []byte("for bob"), 0o600); err != nil {
		t.Fatal(err)
	}
	alice.ok("send", "-m", "a file", "-a", file, bob.number)
	got := bob.ok("receive", "--json", "--timeout", "1")
	want := filepath.Join(alice.config, bob.number, "attachments", "note.txt")
	if !strings.Contains(got, `"path":"`+want+`"`) {
		t.Errorf("the file was not saved in bob's own folder %s:\n%s", want, got)
	}
}
