package cli

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/store/sqlite"
)

func groupTextsOf(evs []Event) []string {
	var out []string
	for _, e := range evs {
		switch {
		case e.Kind == "message" && e.Group != "":
			out = append(out, e.Text)
		case e.Kind == "error":
			out = append(out, "error: "+e.Error)
		}
	}
	return out
}

// TestRemovedMemberCannotDecrypt: a removed member who keeps every key she
// ever had still cannot read what is sent after her removal, because the
// senders replaced their sender keys and never gave her the new ones.
func TestRemovedMemberCannotDecrypt(t *testing.T) {
	ctx := context.Background()
	server, data := startRelayIn(t)
	alice, bob, carol := newAccount(t, server, 0), newAccount(t, server, 1), newAccount(t, server, 2)
	name := "Night shift"
	g, _, err := alice.UpdateGroup(ctx, GroupChange{Name: &name, Add: []string{bob.Number, carol.Number}})
	if err != nil {
		t.Fatal(err)
	}
	receiveAll(t, bob)
	receiveAll(t, carol)
	if _, err := alice.SendGroup(ctx, g.ID, "before", nil); err != nil {
		t.Fatal(err)
	}
	if got := groupTextsOf(receiveAll(t, carol)); strings.Join(got, "|") != "before" {
		t.Fatalf("carol before removal: %v", got)
	}
	// Carol copies Alice's sender key before she is removed.
	var kept []byte
	carol.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		kept, err = tx.SenderKey(ctx, g.ID, alice.ID, 1)
		return err
	})
	if kept == nil {
		t.Fatal("carol has no sender key for alice")
	}
	if _, _, err := alice.UpdateGroup(ctx, GroupChange{ID: g.ID, Remove: []string{carol.Number}}); err != nil {
		t.Fatal(err)
	}
	receiveAll(t, carol)
	if _, err := alice.SendGroup(ctx, g.ID, "after", nil); err != nil {
		t.Fatal(err)
	}
	// The ciphertext Bob is about to receive, straight from the relay.
	relayDB, err := sqlite.Open(ctx, filepath.Join(data, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer relayDB.Close()
	queued, err := relayDB.Pending(ctx, uuid.MustParse(bob.ID), 1, 0, time.Now(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var frame []byte
	for _, e := range queued {
		if e.Type == EnvelopeSenderKey {
			frame = e.Content
		}
	}
	if frame == nil {
		t.Fatal("no group envelope queued for bob")
	}
	errKept := errors.New("rolled back")
	err = carol.db.Update(ctx, func(tx *clientdb.Tx) error {
		if err := tx.PutSenderKey(ctx, g.ID, alice.ID, 1, kept); err != nil {
			return err
		}
		st := carol.groupStore(tx, g.ID)
		if _, err := parseGroupFrame(frame); err != nil {
			return err
		}
		if _, err := protocol.GroupDecrypt(ctx, st, address(alice.ID, 1), frame[1:]); err == nil {
			t.Error("the removed member decrypted a message sent after her removal")
		}
		return errKept
	})
	if !errors.Is(err, errKept) {
		t.Fatal(err)
	}
	if got := groupTextsOf(receiveAll(t, bob)); strings.Join(got, "|") != "before|after" {
		t.Fatalf("bob: %v", got)
	}
}

// TestHostileGroupInput: group messages and updates from non-members,
// group content over a pairwise session, and malformed sender keys are
// each an error event for that envelope, and the group is unchanged.
func TestHostileGroupInput(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob, mallory := newAccount(t, server, 0), newAccount(t, server, 1), newAccount(t, server, 2)
	g, _, err := alice.UpdateGroup(ctx, GroupChange{Add: []string{bob.Number}})
	if err != nil {
		t.Fatal(err)
	}
	receiveAll(t, bob)
	// Mallory learned the group id and forges a group of his own under it.
	fake := Group{ID: g.ID, Revision: 99, Active: true, Members: []content.GroupMember{
		{Account: mallory.ID, Number: mallory.Number}, {Account: bob.ID, Number: bob.Number}}}
	if err := mallory.db.Update(ctx, func(tx *clientdb.Tx) error { return saveGroup(ctx, tx, fake) }); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.SendGroup(ctx, g.ID, "spoofed", nil); err != nil {
		t.Fatal(err)
	}
	mallory.announce(ctx, fake, fake.Members)
	r, err := mallory.resolve(ctx, bob.Number)
	if err != nil {
		t.Fatal(err)
	}
	hostile := []*content.Content{
		{Timestamp: 1, Text: "pairwise but claims the group", GroupID: g.ID},
		{Timestamp: 2, SenderKey: &content.SenderKeyDistribution{GroupID: g.ID, Message: []byte("3garbage")}},
		{Timestamp: 3, SenderKey: &content.SenderKeyDistribution{GroupID: g.ID, Message: []byte{0x33, 0x08, 0x01, 0x10, 0x01, 0x1a, 0x20}}},
	}
	for _, c := range hostile {
		if err := mallory.sendContent(ctx, r, c, false); err != nil {
			t.Fatal(err)
		}
	}
	evs := receiveAll(t, bob)
	var errs []string
	for _, e := range evs {
		switch {
		case e.Kind == "error":
			errs = append(errs, e.Error)
		case e.Kind == "message" && e.Group != "":
			t.Errorf("bob accepted a group message from a non-member: %+v", e)
		}
	}
	// the spoofed message, the forged update, and the three hostile contents
	if len(errs) != 5 {
		t.Fatalf("%d error events, want 5: %q", len(errs), errs)
	}
	gs, _ := bob.Groups(ctx)
	if len(gs) != 1 || gs[0].Revision != 1 || len(gs[0].Members) != 2 || gs[0].has(mallory.ID) {
		t.Fatalf("bob's group changed: %+v", gs)
	}
	// The group still works.
	if _, err := alice.SendGroup(ctx, g.ID, "still fine", nil); err != nil {
		t.Fatal(err)
	}
	if got := groupTextsOf(receiveAll(t, bob)); strings.Join(got, "|") != "still fine" {
		t.Fatalf("bob: %v", got)
	}
}

// TestGroupTimer: a group's disappearing-message timer set with
// updateGroup reaches the members, and their copies disappear with it.
func TestGroupTimer(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	timer := int64(5)
	g, _, err := alice.UpdateGroup(ctx, GroupChange{Add: []string{bob.Number}, ExpireTimer: &timer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, "gone soon", nil); err != nil {
		t.Fatal(err)
	}
	evs := receiveAll(t, bob)
	if got := groupTextsOf(evs); strings.Join(got, "|") != "gone soon" {
		t.Fatalf("bob: %v", got)
	}
	gs, _ := bob.Groups(ctx)
	if len(gs) != 1 || gs[0].ExpireTimer != timer {
		t.Fatalf("bob's group timer: %+v", gs)
	}
	texts := func(a *Account) []string {
		h, err := a.GroupHistory(ctx, g.ID, 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range h {
			if e.Kind == "message" {
				out = append(out, e.Text)
			}
		}
		return out
	}
	if got := texts(bob); len(got) != 1 {
		t.Fatalf("bob's history before the timer: %v", got)
	}
	for _, a := range []*Account{alice, bob} {
		a.now = func() time.Time { return time.Now().Add(time.Duration(timer+1) * time.Second) }
		a.expire(ctx)
		if got := texts(a); len(got) != 0 {
			t.Errorf("history after the timer: %v", got)
		}
	}
}
