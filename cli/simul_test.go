package cli

import (
	"context"
	"strings"
	"testing"
)

// TestSimultaneousInitiate: both sides start a session before receiving
// the other's first message; afterwards messages still flow both ways.
func TestSimultaneousInitiate(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	send := func(from, to *Account, text string) {
		t.Helper()
		if _, res, err := from.SendText(ctx, text, to.Number); err != nil || res[0].Err != nil {
			t.Fatal(err, res)
		}
	}
	send(alice, bob, "a1")
	send(bob, alice, "b1")
	if got := strings.Join(texts(receiveAll(t, alice)), ","); got != "b1" {
		t.Fatalf("alice got %s", got)
	}
	if got := strings.Join(texts(receiveAll(t, bob)), ","); got != "a1" {
		t.Fatalf("bob got %s", got)
	}
	// Each side now has both sessions; receipts and messages cross on
	// either. Nothing may fail to decrypt (texts lists errors too).
	for _, round := range []string{"2", "3", "4"} {
		send(alice, bob, "a"+round)
		send(bob, alice, "b"+round)
		if got := strings.Join(texts(receiveAll(t, bob)), ","); got != "a"+round {
			t.Errorf("round %s: bob got %s", round, got)
		}
		if got := strings.Join(texts(receiveAll(t, alice)), ","); got != "b"+round {
			t.Errorf("round %s: alice got %s", round, got)
		}
	}
}
