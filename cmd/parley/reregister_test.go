package main_test

import (
	"strings"
	"testing"
)

// TestReregisteredElsewhereHint: when the number is registered again from
// another directory (say, a script using the same test number), the first
// parley loses its device; it says what happened and what to do, instead of
// a bare "401 invalid device credentials".
func TestReregisteredElsewhereHint(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	again := newUser(t, server, 0) // the same number, another config directory
	again.register()
	out, errs, code := alice.run("", "send", "-m", "hi", bob.number)
	if code == 0 {
		t.Fatalf("send from a device the relay forgot succeeded:\n%s", out)
	}
	if !strings.Contains(errs, "registered again") || !strings.Contains(errs, "register") {
		t.Errorf("no hint after a re-registration elsewhere:\n%s", errs)
	}
}
