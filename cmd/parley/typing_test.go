package main_test

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestSendTypingEndToEnd: `parley sendTyping` and the daemon's sendTyping
// reach a contact whose `parley receive` is running, as a typing event.
func TestSendTypingEndToEnd(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "hi", bob.number)
	bob.ok("receive", "--timeout", "1")
	alice.ok("receive", "--timeout", "1")

	for _, how := range []string{"command", "daemon"} {
		recv := bob.cmd("receive", "--json", "--timeout", "4")
		var out bytes.Buffer
		recv.Stdout = &out
		if err := recv.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // bob's socket is live
		if how == "command" {
			alice.ok("sendTyping", bob.number)
		} else {
			out, errs, code := alice.run(`{"jsonrpc":"2.0","method":"sendTyping","params":{"recipient":"`+bob.number+`"},"id":1}`+"\n", "daemon")
			if code != 0 || !strings.Contains(out, `"result"`) {
				t.Fatalf("daemon sendTyping: exit %d\n%s%s", code, out, errs)
			}
		}
		if err := recv.Wait(); err != nil {
			t.Fatalf("%s: bob's receive: %v", how, err)
		}
		if !strings.Contains(out.String(), `"type":"typing"`) {
			t.Errorf("%s: bob saw no typing event:\n%s", how, out.String())
		}
	}
}

// TestSendTypingToNewContact: with no session yet, a typing indicator is
// not sent (starting a session would use up one of the other side's
// one-time prekeys for a signal that may be dropped); the command still
// succeeds, and the first message then reaches the other side as usual.
func TestSendTypingToNewContact(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	recv := bob.cmd("receive", "--json", "--timeout", "3")
	var out bytes.Buffer
	recv.Stdout = &out
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // bob's socket is live
	alice.ok("sendTyping", bob.number)
	if err := recv.Wait(); err != nil {
		t.Fatalf("bob's receive: %v", err)
	}
	if strings.Contains(out.String(), `"type":"typing"`) {
		t.Errorf("a typing indicator started a session:\n%s", out.String())
	}
	alice.ok("send", "-m", "first", bob.number)
	if got := bob.ok("receive", "--json", "--timeout", "1"); !strings.Contains(got, `"text":"first"`) {
		t.Errorf("bob received %s", got)
	}
}
