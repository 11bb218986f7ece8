package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// applySenderKey stores a member device's sender key for a group.
func (a *Account) applySenderKey(ctx context.Context, tx *clientdb.Tx, ev *Event, env *wire.Envelope, skd *content.SenderKeyDistribution) error {
	m, err := parseDistribution(skd.Message)
	if err != nil {
		return err
	}
	st := a.groupStore(tx, skd.GroupID)
	if err := protocol.ProcessSenderKeyDistributionMessage(ctx, st, address(ev.SenderAccount, env.SourceDevice), m); err != nil {
		return fmt.Errorf("%w: sender key: %w", ErrBadEnvelope, err)
	}
	ev.Group = skd.GroupID
	return nil
}

// applyGroupUpdate applies a group's new state sent by a member: only a
// member may change a group, and only to a higher revision. Removals make
// this device replace its own sender key and forget the removed members'.
func (a *Account) applyGroupUpdate(ctx context.Context, tx *clientdb.Tx, ev *Event, c *content.Content, plaintext []byte) error {
	st := c.GroupUpdate
	sender := ev.SenderAccount
	member := func(ms []content.GroupMember, account string) bool {
		return slices.ContainsFunc(ms, func(m content.GroupMember) bool { return m.Account == account })
	}
	old, err := loadGroup(ctx, tx, st.ID)
	known := err == nil
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return local(err)
	}
	switch {
	case known && !old.has(sender):
		return fmt.Errorf("%w: a group update from someone not in the group", ErrBadEnvelope)
	case !known && !member(st.Members, sender):
		return fmt.Errorf("%w: a group update for a group its sender is not in", ErrBadEnvelope)
	}
	ev.Group, ev.GroupName = st.ID, st.Name
	for _, m := range st.Members {
		ev.Members = append(ev.Members, orAccount(clientdb.Recipient{Account: m.Account, Number: m.Number}))
	}
	if known && st.Revision <= old.Revision {
		return nil // an older state arriving late changes nothing
	}
	g := Group{ID: st.ID, Name: st.Name, Revision: st.Revision, Members: st.Members, Active: member(st.Members, a.ID)}
	var removed []string
	for _, m := range old.Members {
		if !member(st.Members, m.Account) {
			removed = append(removed, m.Account)
		}
	}
	ev.Removed = !g.Active
	ev.ExpireTimer = c.ExpireTimer
	err = saveGroup(ctx, tx, g)
	if err == nil {
		_, err = tx.SetTimer(ctx, g.ID, c.ExpireTimer)
	}
	if err == nil && !g.Active {
		err = tx.DeleteSenderKeys(ctx, g.ID, "")
		if err == nil {
			err = tx.UnmarkShared(ctx, g.ID, "")
		}
	} else if err == nil {
		err = forgetRemoved(ctx, tx, g.ID, a.ID, removed)
	}
	if err == nil {
		_, err = tx.AddMessage(ctx, clientdb.Message{Conversation: g.ID, SenderDevice: ev.SenderDevice,
			SentMS: c.Timestamp, ReceivedMS: a.now().UnixMilli(), Status: clientdb.StatusSent, Body: plaintext})
	}
	return local(err)
}

// applyGroupMessage records a message sent to a group we are in by one of
// its members (or by another of our devices).
func (a *Account) applyGroupMessage(ctx context.Context, tx *clientdb.Tx, ev *Event, env *wire.Envelope, c *content.Content, plaintext []byte) error {
	g, err := loadGroup(ctx, tx, c.GroupID)
	if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
		return local(err)
	}
	if err != nil || !g.Active || !g.has(ev.SenderAccount) {
		return fmt.Errorf("%w: a group message from someone not in the group, or to a group we are not in", ErrBadEnvelope)
	}
	ev.Kind, ev.Timestamp = "message", c.Timestamp
	ev.Group, ev.GroupName = g.ID, g.Name
	ev.Text, ev.ExpireTimer = c.Text, c.ExpireTimer
	outgoing := ev.SenderAccount == a.ID
	if outgoing {
		ev.Kind = "sent" // from another of our devices
	}
	if _, err := tx.SetTimer(ctx, g.ID, c.ExpireTimer); err != nil {
		return local(err)
	}
	if c.Bucket != nil {
		if err := tx.AdoptGroupBucket(ctx, g.ID, clientdb.Bucket{ID: c.Bucket.ID, MemberSecret: c.Bucket.MemberSecret}); err != nil {
			return local(err)
		}
	}
	if err := a.record(ctx, tx, ev, g.ID, outgoing, env.SourceDevice, c, plaintext, true); err != nil {
		return local(err)
	}
	ev.Sender = c.SenderNumber
	return nil
}
