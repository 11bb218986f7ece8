package main_test

import (
	"strconv"
	"strings"
	"testing"
)

// TestPartialSend: a send to several recipients where one number is not
// registered still prints the message's timestamp (the others got it) and
// reports the failure once; when every recipient fails, the failure is
// printed once and the exit code is not 0.
func TestPartialSend(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	nobody := newUser(t, server, 2).number // never registered
	out, errs, code := alice.run("", "send", "-m", "hi", bob.number, nobody)
	if code != 0 {
		t.Errorf("partial send: exit %d", code)
	}
	if _, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64); err != nil {
		t.Errorf("partial send printed no timestamp: %q", out)
	}
	if n := strings.Count(errs, nobody); n != 1 {
		t.Errorf("the failed recipient is reported %d times:\n%s", n, errs)
	}
	out, errs, code = alice.run("", "send", "-m", "hi", nobody)
	if code == 0 || strings.TrimSpace(out) != "" {
		t.Errorf("send to nobody registered: exit %d, stdout %q", code, out)
	}
	if n := strings.Count(errs, "parley:"); n != 1 {
		t.Errorf("the failure is printed %d times:\n%s", n, errs)
	}
	if got := bob.ok("receive", "--timeout", "1"); !strings.Contains(got, "hi") {
		t.Errorf("bob did not get the message: %s", got)
	}
}
