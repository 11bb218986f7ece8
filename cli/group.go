package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/protocol"
)

// EnvelopeSenderKey is the envelope type of group messages: a version byte
// (3), then a signed SenderKeyMessage in libsignal's current format. The
// group is not named: the message carries only the sender's own random
// distribution id and chain id, and the receiver finds the group by the
// chain, so the relay sees no group identifier.
const EnvelopeSenderKey = 4

// groupFrameVersion is 3 since sender keys moved to libsignal's current
// format (distribution id and chain id); version 2 carried the old one.
const groupFrameVersion = 3

// Group is a group as this device knows it. Groups live only on their
// members' devices; the relay knows nothing of them.
type Group struct {
	ID       string                `json:"id"`
	Name     string                `json:"name"`
	Revision int64                 `json:"revision"`
	Members  []content.GroupMember `json:"members"`
	// Active is false once we left or were removed.
	Active bool `json:"active"`
	// ExpireTimer is the group's disappearing-message timer in seconds.
	ExpireTimer int64 `json:"expire_timer,omitzero"`
}

func (g *Group) has(account string) bool {
	return slices.ContainsFunc(g.Members, func(m content.GroupMember) bool { return m.Account == account })
}

func (g *Group) state() *content.GroupState {
	return &content.GroupState{ID: g.ID, Name: g.Name, Revision: g.Revision, Members: g.Members}
}

func loadGroup(ctx context.Context, tx *clientdb.Tx, id string) (Group, error) {
	var g Group
	b, err := tx.Group(ctx, id)
	if err != nil {
		return g, err
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("stored group %s: %w", id, err)
	}
	g.ExpireTimer, err = tx.Timer(ctx, id)
	return g, err
}

func saveGroup(ctx context.Context, tx *clientdb.Tx, g Group) error {
	b, err := json.Marshal(Group{ID: g.ID, Name: g.Name, Revision: g.Revision, Members: g.Members, Active: g.Active})
	if err != nil {
		return err
	}
	return tx.PutGroup(ctx, g.ID, b)
}

// Groups lists the groups this device knows.
func (a *Account) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		out, err = loadGroups(ctx, tx)
		return err
	})
	return out, local(err)
}

// loadGroups returns every group this device knows.
func loadGroups(ctx context.Context, tx *clientdb.Tx) ([]Group, error) {
	ids, err := tx.GroupIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Group, 0, len(ids))
	for _, id := range ids {
		g, err := loadGroup(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// GroupChange is what updateGroup changes; zero values change nothing.
type GroupChange struct {
	ID     string // empty: create a new group
	Name   *string
	Add    []string // numbers
	Remove []string // numbers
	// ExpireTimer sets the disappearing-message timer (nil: unchanged).
	ExpireTimer *int64
}

// group loads a group that we are an active member of.
func (a *Account) group(ctx context.Context, id string) (Group, error) {
	var g Group
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		g, err = loadGroup(ctx, tx, id)
		return err
	})
	switch {
	case errors.Is(err, clientdb.ErrNotFound):
		return g, fmt.Errorf("%w: no group %s (parley listGroups)", ErrUsage, id)
	case err != nil:
		return g, local(err)
	case !g.Active:
		return g, fmt.Errorf("%w: you are no longer a member of group %s", ErrUsage, id)
	}
	return g, nil
}

// UpdateGroup creates a group (c.ID empty) or changes one, and sends the
// new state to every member, old and new, inside the pairwise sessions.
// Removing a member replaces our sender key (and makes every other member
// replace theirs when they apply the update), so the removed member cannot
// read what is sent afterwards; the group's attachment bucket gets a new
// member secret.
func (a *Account) UpdateGroup(ctx context.Context, c GroupChange) (Group, Sent, error) {
	if err := a.requireRegistered(); err != nil {
		return Group{}, Sent{}, err
	}
	var g Group
	if c.ID == "" {
		b := make([]byte, 16)
		rand.Read(b)
		g = Group{ID: base64.RawURLEncoding.EncodeToString(b), Active: true,
			Members: []content.GroupMember{{Account: a.ID, Number: a.Number}}}
	} else {
		var err error
		if g, err = a.group(ctx, c.ID); err != nil {
			return g, Sent{}, err
		}
	}
	old := slices.Clone(g.Members)
	if c.Name != nil {
		if len(*c.Name) > 256 {
			return g, Sent{}, fmt.Errorf("%w: group names are at most 256 bytes", ErrUsage)
		}
		g.Name = *c.Name
	}
	for _, n := range c.Add {
		r, err := a.resolveMember(ctx, n)
		if err != nil {
			return g, Sent{}, err
		}
		if !g.has(r.Account) {
			g.Members = append(g.Members, content.GroupMember{Account: r.Account, Number: r.Number})
		}
	}
	var removed []string
	for _, n := range c.Remove {
		r, err := a.resolveMember(ctx, n)
		if err != nil {
			return g, Sent{}, err
		}
		if r.Account == a.ID {
			return g, Sent{}, fmt.Errorf("%w: to leave a group use quitGroup", ErrUsage)
		}
		if g.has(r.Account) {
			removed = append(removed, r.Account)
			g.Members = slices.DeleteFunc(g.Members, func(m content.GroupMember) bool { return m.Account == r.Account })
		}
	}
	if len(g.Members) > content.MaxGroupMembers {
		return g, Sent{}, fmt.Errorf("%w: a group has at most %d members", ErrUsage, content.MaxGroupMembers)
	}
	if c.ExpireTimer != nil {
		t := *c.ExpireTimer
		if t < 0 || t > content.MaxExpireTimer || (t > 0 && t < MinTimer) {
			return g, Sent{}, fmt.Errorf("%w: the timer must be 0 (off) or %d to %d seconds", ErrUsage, MinTimer, content.MaxExpireTimer)
		}
		g.ExpireTimer = t
	}
	g.Revision++
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		if err := saveGroup(ctx, tx, g); err != nil {
			return err
		}
		if _, err := tx.SetTimer(ctx, g.ID, g.ExpireTimer); err != nil {
			return err
		}
		return forgetRemoved(ctx, tx, g.ID, a.ID, removed)
	})
	if err != nil {
		return g, Sent{}, local(err)
	}
	if len(removed) > 0 {
		if err := a.rotateGroupBucket(ctx, g.ID); err != nil {
			return g, Sent{}, err
		}
	}
	if c.ExpireTimer != nil {
		if err := a.matchBucketRetention(ctx, g.ID, g.ExpireTimer); err != nil {
			return g, Sent{}, err
		}
	}
	// Everyone who was or is a member hears of the change; removed members
	// learn that they are out.
	to := old
	for _, m := range g.Members {
		if !slices.ContainsFunc(to, func(o content.GroupMember) bool { return o.Account == m.Account }) {
			to = append(to, m)
		}
	}
	return g, a.announce(ctx, g, to), nil
}

// forgetRemoved drops the sender keys a removal makes unsafe: ours (so a
// new one goes to the remaining members only) and the removed members'.
func forgetRemoved(ctx context.Context, tx *clientdb.Tx, group, self string, removed []string) error {
	if len(removed) == 0 {
		return nil
	}
	if err := tx.DeleteSenderKeys(ctx, group, self); err != nil {
		return err
	}
	if err := tx.UnmarkShared(ctx, group, ""); err != nil {
		return err
	}
	for _, r := range removed {
		if err := tx.DeleteSenderKeys(ctx, group, r); err != nil {
			return err
		}
	}
	return nil
}

// announce sends the group's state to members (and our other devices) and
// records it in the group's history.
func (a *Account) announce(ctx context.Context, g Group, to []content.GroupMember) Sent {
	c := &content.Content{Timestamp: a.now().UnixMilli(), GroupUpdate: g.state(), ExpireTimer: g.ExpireTimer}
	body, err := a.marshal(c)
	if err != nil {
		return Sent{Timestamp: c.Timestamp, Results: []Result{{Err: err}}}
	}
	var results []Result
	for _, m := range to {
		r := clientdb.Recipient{Account: m.Account, Number: m.Number}
		if m.Account == a.ID {
			if others, err := a.otherDevices(ctx); err != nil || len(others) == 0 {
				continue
			} else if err := a.sessionsWith(ctx, r, others); err != nil {
				results = append(results, Result{Recipient: m.Number, Account: m.Account, Err: err})
				continue
			}
		}
		err := a.sendPlaintext(ctx, r, body, sendOpts{Timestamp: c.Timestamp, Urgent: true})
		if m.Account != a.ID {
			results = append(results, Result{Recipient: m.Number, Account: m.Account, Err: err})
		}
	}
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.AddMessage(ctx, clientdb.Message{Conversation: g.ID, Outgoing: true, SenderDevice: a.DeviceID,
			SentMS: c.Timestamp, ReceivedMS: c.Timestamp, Status: clientdb.StatusSent, Body: body})
		return err
	}); err != nil {
		results = append(results, Result{Err: local(err)})
	}
	return Sent{Timestamp: c.Timestamp, Results: results}
}

// QuitGroup leaves a group: the other members are told, and this device
// forgets the group's keys.
func (a *Account) QuitGroup(ctx context.Context, id string) (Sent, error) {
	g, err := a.group(ctx, id)
	if err != nil {
		return Sent{}, err
	}
	to := slices.Clone(g.Members)
	g.Members = slices.DeleteFunc(g.Members, func(m content.GroupMember) bool { return m.Account == a.ID })
	g.Revision++
	g.Active = false
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		if err := saveGroup(ctx, tx, g); err != nil {
			return err
		}
		return errors.Join(tx.DeleteSenderKeys(ctx, g.ID, ""), tx.UnmarkShared(ctx, g.ID, ""))
	}); err != nil {
		return Sent{}, local(err)
	}
	return a.announce(ctx, g, to), nil
}

// resolveMember maps a number to its account (ourselves included).
func (a *Account) resolveMember(ctx context.Context, number string) (clientdb.Recipient, error) {
	n, err := phone.Parse(number)
	if err != nil {
		return clientdb.Recipient{}, fmt.Errorf("%w: member %q: %v", ErrUsage, number, err)
	}
	if n.String() == a.Number {
		return clientdb.Recipient{Account: a.ID, Number: a.Number}, nil
	}
	return a.resolve(ctx, n.String())
}

// rotateGroupBucket gives the group's attachment bucket a new member
// secret after a removal; the next message with files shares it.
func (a *Account) rotateGroupBucket(ctx context.Context, group string) error {
	var b clientdb.Bucket
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		b, err = tx.Bucket(ctx, group)
		return err
	})
	if errors.Is(err, clientdb.ErrNotFound) {
		return nil
	}
	if err != nil {
		return local(err)
	}
	if b.AdminSecret == nil {
		// Not the bucket's admin: the group moves to a new bucket instead,
		// shared with the next file sent.
		return local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.DeleteBucket(ctx, group) }))
	}
	b.MemberSecret = make([]byte, 32)
	rand.Read(b.MemberSecret)
	if err := a.relay.RotateMemberSecret(ctx, b.ID, b.AdminSecret, b.MemberSecret); err != nil {
		return fmt.Errorf("rotate the group's attachment bucket secret: %w", err)
	}
	return local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.ReplaceBucket(ctx, group, b) }))
}

// SendGroup sends a message to every member of a group: encrypted once
// with our sender key (handed to members who lack it over the pairwise
// sessions) and submitted in one multi-recipient request.
func (a *Account) SendGroup(ctx context.Context, id, text string, files []string) (int64, error) {
	if err := a.requireRegistered(); err != nil {
		return 0, err
	}
	if text == "" && len(files) == 0 {
		return 0, fmt.Errorf("%w: empty message", ErrUsage)
	}
	out, err := checkFiles(files)
	if err != nil {
		return 0, err
	}
	g, err := a.group(ctx, id)
	if err != nil {
		return 0, err
	}
	c, err := a.withAttachments(ctx, g.ID, content.Content{Timestamp: a.now().UnixMilli(), Text: text, GroupID: g.ID, ExpireTimer: g.ExpireTimer}, out)
	if err != nil {
		return 0, err
	}
	body, err := a.marshal(c)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	targets, err := a.groupTargets(ctx, g)
	if err != nil {
		return 0, err
	}
	frame, err := a.encryptGroup(ctx, g.ID, targets, body)
	if err != nil {
		return 0, err
	}
	// Members whose profile key we hold get their copy sealed, one
	// request each; the rest (and our own devices) share one
	// multi-recipient request.
	targets = a.sendSealedGroupCopies(ctx, targets, frame, c.Timestamp, g.ExpireTimer)
	if len(targets) > 0 {
		if err := a.submitGroup(ctx, g.ID, targets, frame, c.Timestamp, g.ExpireTimer); err != nil {
			return 0, err
		}
	}
	now := a.now().UnixMilli()
	m := clientdb.Message{Conversation: g.ID, Outgoing: true, SenderDevice: a.DeviceID, SentMS: c.Timestamp,
		ReceivedMS: now, Status: clientdb.StatusSent, Body: body}
	if g.ExpireTimer > 0 {
		m.ExpiresMS = now + g.ExpireTimer*1000
	}
	return c.Timestamp, local(a.db.Update(ctx, func(tx *clientdb.Tx) error {
		_, err := tx.AddMessage(ctx, m)
		return err
	}))
}

// groupTargets are the accounts a group message goes to: every other
// member, and our own account when we have other devices.
func (a *Account) groupTargets(ctx context.Context, g Group) ([]clientdb.Recipient, error) {
	var out []clientdb.Recipient
	for _, m := range g.Members {
		if m.Account != a.ID {
			out = append(out, clientdb.Recipient{Account: m.Account, Number: m.Number})
		}
	}
	others, err := a.otherDevices(ctx)
	if err != nil {
		return nil, err
	}
	if len(others) > 0 {
		self := clientdb.Recipient{Account: a.ID, Number: a.Number}
		if err := a.sessionsWith(ctx, self, others); err != nil {
			return nil, err
		}
		out = append(out, self)
	}
	return out, nil
}

// encryptGroup makes sure every target holds our current sender key (one
// pairwise message to each that does not) and encrypts body once.
func (a *Account) encryptGroup(ctx context.Context, group string, targets []clientdb.Recipient, body []byte) ([]byte, error) {
	dist, err := a.senderKeyDistribution(ctx, group)
	if err != nil {
		return nil, err
	}
	var shared []string
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		shared, err = tx.SharedWith(ctx, group)
		return err
	}); err != nil {
		return nil, local(err)
	}
	for _, t := range targets {
		if !slices.Contains(shared, t.Account) {
			if err := a.shareSenderKey(ctx, group, t, dist); err != nil {
				return nil, err
			}
		}
	}
	var frame []byte
	a.mu.Lock()
	defer a.mu.Unlock()
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		st := a.groupStore(tx, group)
		id, err := distributionID(ctx, tx, group)
		if err != nil {
			return err
		}
		msg, err := protocol.GroupEncrypt(ctx, rand.Reader, st, address(a.ID, a.DeviceID), id, body)
		if err != nil {
			return err
		}
		frame = append([]byte{groupFrameVersion}, msg.Bytes()...)
		return nil
	})
	return frame, err
}

// senderKeyDistribution returns the distribution message of our current
// sender key for group, creating the key the first time.
func (a *Account) senderKeyDistribution(ctx context.Context, group string) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var dist []byte
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		id, err := distributionID(ctx, tx, group)
		if err != nil {
			return err
		}
		skdm, err := protocol.CreateSenderKeyDistributionMessage(ctx, rand.Reader, a.groupStore(tx, group), address(a.ID, a.DeviceID), id)
		if err == nil {
			dist = skdm.Bytes()
		}
		return err
	})
	return dist, local(err)
}

// distributionID is the id our sender key for group travels under: random
// per group and device, so the relay, which sees it on every group
// message, cannot tell which members' messages belong to one group.
func distributionID(ctx context.Context, tx *clientdb.Tx, group string) (uuid.UUID, error) {
	key := "sender_key_distribution/" + group
	b, err := tx.Value(ctx, key)
	if err == nil {
		return uuid.FromBytes(b)
	}
	if !errors.Is(err, clientdb.ErrNotFound) {
		return uuid.UUID{}, err
	}
	id := uuid.New()
	return id, tx.SetValue(ctx, key, id[:], false)
}

// groupStore is a store whose sender keys are those of group.
func (a *Account) groupStore(tx *clientdb.Tx, group string) *signalStore {
	st := a.store(tx)
	st.group = group
	return st
}

// shareSenderKey sends our sender key for group to every device of t.
func (a *Account) shareSenderKey(ctx context.Context, group string, t clientdb.Recipient, dist []byte) error {
	c := &content.Content{Timestamp: a.now().UnixMilli(), SenderKey: &content.SenderKeyDistribution{GroupID: group, Message: dist}}
	if err := a.sendContent(ctx, t, c, false); err != nil {
		return fmt.Errorf("hand our group key to %s: %w", orAccount(t), err)
	}
	return local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.MarkShared(ctx, group, t.Account) }))
}

func orAccount(r clientdb.Recipient) string {
	if r.Number != "" {
		return r.Number
	}
	return r.Account
}

// submitGroup sends the encrypted frame to every target device in one
// multi-recipient request, repairing sessions (and handing new devices our
// sender key) when the relay reports device lists out of date.
func (a *Account) submitGroup(ctx context.Context, group string, targets []clientdb.Recipient, frame []byte, ts, timer int64) error {
	byAccount := map[string]clientdb.Recipient{}
	for _, t := range targets {
		byAccount[t.Account] = t
	}
	var lastErr error
	for range maxSendAttempts {
		req := relayclient.MultiSend{Timestamp: ts, Type: EnvelopeSenderKey, Content: frame, Urgent: true, ExpiresIn: timer}
		if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
			for _, t := range targets {
				devs, err := sessionDevices(ctx, tx, t.Account)
				if err != nil {
					return err
				}
				rc := relayclient.MultiRecipient{AccountID: t.Account}
				for _, d := range devs {
					if t.Account != a.ID || d.DeviceID != a.DeviceID {
						rc.Devices = append(rc.Devices, d)
					}
				}
				if len(rc.Devices) > 0 {
					req.Recipients = append(req.Recipients, rc)
				}
			}
			return nil
		}); err != nil {
			return local(err)
		}
		err := a.submitMulti(ctx, req)
		if err == nil {
			return nil
		}
		lastErr = err
		var mismatched []struct {
			AccountID string `json:"account_id"`
			Missing   []int  `json:"missing_devices"`
			Extra     []int  `json:"extra_devices"`
		}
		var stale []struct {
			AccountID string `json:"account_id"`
			Stale     []int  `json:"stale_devices"`
		}
		if !relayclient.Details(err, "mismatched", &mismatched) && !relayclient.Details(err, "stale", &stale) {
			return err
		}
		relayclient.Details(err, "stale", &stale)
		repair := map[string][2][]int{} // account → drop, start
		for _, m := range mismatched {
			repair[m.AccountID] = [2][]int{m.Extra, m.Missing}
		}
		for _, s := range stale {
			r := repair[s.AccountID]
			repair[s.AccountID] = [2][]int{append(r[0], s.Stale...), append(r[1], s.Stale...)}
		}
		for account, r := range repair {
			t, ok := byAccount[account]
			if !ok {
				return err
			}
			if err := a.forgetDevices(ctx, account, r[0]); err != nil {
				return err
			}
			for _, d := range r[1] {
				if err := a.startSessions(ctx, t, d); err != nil {
					return err
				}
			}
			// New or re-installed devices need our sender key too.
			if err := local(a.db.Update(ctx, func(tx *clientdb.Tx) error { return tx.UnmarkShared(ctx, group, account) })); err != nil {
				return err
			}
			dist, err := a.senderKeyDistribution(ctx, group)
			if err != nil {
				return err
			}
			if err := a.shareSenderKey(ctx, group, t, dist); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("the group's devices kept changing: %w", lastErr)
}

// submitMulti sends one multi-recipient request, retried like single
// sends.
func (a *Account) submitMulti(ctx context.Context, req relayclient.MultiSend) error {
	return a.retryWithKey(ctx, func(key string) error {
		sent, err := a.relay.SendMulti(ctx, req, key)
		if err == nil {
			a.reportSkipped(ctx, sent)
		}
		return err
	})
}

// parseGroupFrame validates a group envelope and parses its
// SenderKeyMessage.
func parseGroupFrame(b []byte) (*protocol.SenderKeyMessage, error) {
	if len(b) < 2 || len(b) > maxEnvelope || b[0] != groupFrameVersion {
		return nil, fmt.Errorf("%w: group message framing", ErrBadEnvelope)
	}
	m, err := protocol.ParseSenderKeyMessage(b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	return m, nil
}

// groupOf finds the group whose sender key (of this sender device) has the
// message's chain.
func groupOf(ctx context.Context, st *signalStore, account string, device int, m *protocol.SenderKeyMessage) (string, error) {
	ids, err := st.tx.SenderKeyGroups(ctx, account, device)
	if err != nil {
		return "", local(err)
	}
	for _, g := range ids {
		st.group = g
		rec, err := st.LoadSenderKey(ctx, address(account, device), m.DistributionID)
		if err != nil {
			return "", err
		}
		if rec.HasChain(m.ChainID) {
			return g, nil
		}
	}
	st.group = ""
	return "", fmt.Errorf("%w: no sender key of this member matches the group message", ErrBadEnvelope)
}

// parseDistribution validates and parses a sender-key distribution message.
func parseDistribution(b []byte) (*protocol.SenderKeyDistributionMessage, error) {
	m, err := protocol.ParseSenderKeyDistributionMessage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: sender-key distribution: %w", ErrBadEnvelope, err)
	}
	return m, nil
}

// sessionDevices lists the devices of account we have sessions with, each
// with the registration id its session record names.
func sessionDevices(ctx context.Context, tx *clientdb.Tx, account string) ([]relayclient.DeviceRef, error) {
	ids, err := tx.SessionDevices(ctx, account)
	if err != nil {
		return nil, err
	}
	devs := make([]relayclient.DeviceRef, 0, len(ids))
	for _, d := range ids {
		b, err := tx.Session(ctx, account, d)
		if err != nil {
			return nil, err
		}
		rec, err := protocol.ParseSessionRecord(b)
		if err != nil {
			return nil, err
		}
		devs = append(devs, relayclient.DeviceRef{DeviceID: d, RegistrationID: int(rec.RemoteRegistrationID())})
	}
	return devs, nil
}
