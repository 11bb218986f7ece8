package cli

import (
	"context"
	"testing"
	"time"
)

// TestTypingIndicator: a typing indicator reaches a contact who is online
// (the README promises "is typing…"). It used to be refused by the relay,
// because the client sent an idempotency key with an online-only send.
func TestTypingIndicator(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "hi", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	receiveAll(t, bob)
	receiveAll(t, alice) // the delivery receipt
	events := make(chan Event, 16)
	done := make(chan error, 1)
	go func() {
		done <- bob.Receive(ctx, ReceiveOptions{Timeout: 3 * time.Second, Handle: func(e Event) { events <- e }})
	}()
	time.Sleep(500 * time.Millisecond) // bob's socket is live
	if err := alice.SendTyping(ctx, bob.Number, true); err != nil {
		t.Fatalf("sendTyping: %v", err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Kind == "typing" {
				if e.Typing == nil || !e.Typing.Started {
					t.Fatalf("typing event: %+v", e)
				}
				return
			}
		case err := <-done:
			t.Fatalf("bob's receive ended (%v) without a typing event", err)
		case <-deadline:
			t.Fatal("no typing event")
		}
	}
}
