package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/cli/signalcli"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/version"
)

// method answers one request; p holds its parameters.
type method func(s *Server, ctx context.Context, c *conn, p *params) (any, error)

// methods are signal-cli's JSON-RPC methods that parley implements, plus
// whoami.
var methods = map[string]method{
	"send":               (*Server).send,
	"sendTyping":         (*Server).sendTyping,
	"sendReceipt":        (*Server).sendReceipt,
	"updateGroup":        (*Server).updateGroup,
	"quitGroup":          (*Server).quitGroup,
	"listGroups":         (*Server).listGroups,
	"listContacts":       (*Server).listContacts,
	"getUserStatus":      (*Server).getUserStatus,
	"updateContact":      (*Server).updateContact,
	"listIdentities":     (*Server).listIdentities,
	"trust":              (*Server).trust,
	"listDevices":        (*Server).listDevices,
	"removeDevice":       (*Server).removeDevice,
	"setPin":             (*Server).setPin,
	"removePin":          (*Server).removePin,
	"version":            (*Server).version,
	"listAccounts":       (*Server).listAccounts,
	"updateAccount":      (*Server).updateAccount,
	"subscribeReceive":   (*Server).subscribeReceive,
	"unsubscribeReceive": (*Server).unsubscribeReceive,
	"whoami":             (*Server).whoami,
}

// Methods lists the method names the server answers, sorted.
func Methods() []string {
	names := make([]string, 0, len(methods))
	for n := range methods {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (s *Server) call(ctx context.Context, c *conn, name string, raw json.RawMessage) (any, *Error) {
	m, ok := methods[name]
	if !ok {
		return nil, &Error{Code: CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", name)}
	}
	p, perr := parseParams(raw)
	if perr != nil {
		return nil, perr
	}
	if acct := p.string("account"); acct != "" && acct != s.account.Number {
		return nil, &Error{Code: CodeUserError, Message: fmt.Sprintf("this parley serves %s only; start `parley -a %s jsonRpc` for that account", s.account.Number, acct)}
	}
	result, err := m(s, ctx, c, p)
	if perr := p.done(s.log, name); perr != nil {
		return nil, perr
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, appError(err)
	}
	return result, nil
}

// appError turns a command's error into a JSON-RPC error.
func appError(err error) *Error {
	e := &Error{Code: codeUnexpected, Message: err.Error()}
	switch cli.ExitCode(err) {
	case cli.ExitUser:
		e.Code = CodeUserError
	case cli.ExitIO:
		e.Code = CodeIOError
	case cli.ExitUntrusted:
		e.Code = CodeUntrusted
	case cli.ExitRateLimit:
		e.Code = CodeRateLimit
	}
	var re *relayclient.Error
	if errors.As(err, &re) && re.RetryAfter > 0 {
		e.Data = map[string]any{"retry_after_seconds": int((re.RetryAfter + time.Second - 1) / time.Second)}
	}
	return e
}

func userError(format string, args ...any) *Error {
	return &Error{Code: CodeUserError, Message: fmt.Sprintf(format, args...)}
}

// sendFailure is signal-cli's error for a send that reached nobody: -4
// when every failure was an untrusted identity, -5 when every one was a
// rate limit, -1 otherwise; data holds the per-recipient results.
func sendFailure(r signalcli.SendResults) *Error {
	if len(r.Results) == 0 || slices.ContainsFunc(r.Results, func(x signalcli.SendResult) bool { return x.Type == "SUCCESS" }) {
		return nil
	}
	all := func(t string) bool {
		return !slices.ContainsFunc(r.Results, func(x signalcli.SendResult) bool { return x.Type != t })
	}
	e := &Error{Code: CodeUserError, Message: "Failed to send message", Data: map[string]any{"response": r}}
	switch {
	case all("IDENTITY_FAILURE"):
		e.Code, e.Message = CodeUntrusted, "Failed to send message due to untrusted identities"
	case all("RATE_LIMIT_FAILURE"):
		e.Code, e.Message = CodeRateLimit, "Failed to send message due to rate limiting"
	}
	var reasons []string
	for _, x := range r.Results {
		reasons = append(reasons, fmt.Sprintf("%s: %s", deref(x.RecipientAddress.Number), x.Error))
	}
	e.Message += " (" + strings.Join(reasons, "; ") + ")"
	return e
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// groupID reads signal-cli's groupId (one group) in parley's form.
func groupID(p *params, name string) string {
	ids := p.strings(name)
	if len(ids) == 0 {
		return ""
	}
	if len(ids) > 1 {
		p.fail(name, "one group id (parley sends to one group per request)")
		return ""
	}
	id, err := signalcli.ParseGroupID(ids[0])
	if err != nil {
		p.fail(name, "a group id (base64)")
	}
	return id
}

func (s *Server) send(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("send", "username", "viewOnce", "endSession", "mention", "textStyle", "quoteTimestamp",
		"quoteAuthor", "quoteMessage", "quoteMention", "quoteAttachment", "quoteTextStyle", "sticker",
		"previewUrl", "previewTitle", "previewDescription", "previewImage", "storyTimestamp", "storyAuthor",
		"editTimestamp", "voiceNote")
	p.bool("noUrgent") // urgency only chooses whether phones are woken; parley marks messages urgent
	m := cli.Message{Recipients: p.strings("recipient"), Text: p.string("message"),
		Files: p.strings("attachment"), NotifySelf: p.bool("notifySelf")}
	group := groupID(p, "groupId")
	if p.bool("noteToSelf") {
		m.Recipients = append(m.Recipients, s.account.Number)
	}
	if p.err != nil {
		return nil, p.err
	}
	if group != "" {
		if len(m.Recipients) > 0 {
			return nil, userError("send: give recipients or a groupId, not both (parley sends one or the other)")
		}
		ts, err := s.account.SendGroup(ctx, group, m.Text, m.Files)
		if err != nil {
			return nil, err
		}
		return signalcli.Results(cli.Sent{Timestamp: ts}, group), nil
	}
	if len(m.Recipients) == 0 {
		return nil, userError("send: no recipients given")
	}
	sent, err := s.account.SendMessage(ctx, m)
	if err != nil {
		return nil, err
	}
	r := signalcli.Results(sent, "")
	if e := sendFailure(r); e != nil {
		return nil, e
	}
	return r, nil
}

func (s *Server) sendTyping(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("sendTyping", "groupId")
	recipients, stop := p.strings("recipient"), p.bool("stop")
	if p.err != nil {
		return nil, p.err
	}
	if len(recipients) == 0 {
		return nil, userError("sendTyping: no recipients given")
	}
	for _, r := range recipients {
		if err := s.account.SendTyping(ctx, r, !stop); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func (s *Server) sendReceipt(ctx context.Context, _ *conn, p *params) (any, error) {
	recipient, timestamps, kind := p.string("recipient"), p.int64s("targetTimestamp"), p.string("type")
	if p.err != nil {
		return nil, p.err
	}
	if kind != "" && kind != "read" {
		return nil, userError("sendReceipt: parley sends read receipts only (type %q)", kind)
	}
	sent, err := s.account.MarkRead(ctx, recipient, timestamps)
	if err != nil {
		return nil, err
	}
	r := signalcli.Results(sent, "")
	if e := sendFailure(r); e != nil {
		return nil, e
	}
	return r, nil
}

func (s *Server) updateGroup(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("updateGroup", "description", "avatar", "admin", "removeAdmin", "ban", "unban", "resetLink",
		"setPermissionAddMember", "setPermissionEditDetails", "setPermissionSendMessages", "memberLabelEmoji", "memberLabel")
	if l := p.string("link"); l != "" && l != "disabled" {
		p.fail("link", `"disabled" (parley groups have no invite links)`)
	}
	c := cli.GroupChange{ID: groupID(p, "groupId"), Add: p.strings("member"), Remove: p.strings("removeMember")}
	if _, ok := p.m["name"]; ok {
		name := p.string("name")
		c.Name = &name
	}
	if t, ok := p.int64("expiration"); ok {
		c.ExpireTimer = &t
	}
	if p.err != nil {
		return nil, p.err
	}
	g, sent, err := s.account.UpdateGroup(ctx, c)
	if err != nil {
		return nil, err
	}
	return signalcli.Results(sent, g.ID), nil
}

func (s *Server) quitGroup(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("quitGroup", "admin")
	p.bool("delete") // leaving already forgets the group's keys; its history stays
	id := groupID(p, "groupId")
	if p.err != nil {
		return nil, p.err
	}
	if id == "" {
		return nil, userError("quitGroup: groupId is required")
	}
	sent, err := s.account.QuitGroup(ctx, id)
	if err != nil {
		return nil, err
	}
	return signalcli.Results(sent, id), nil
}

func (s *Server) listGroups(ctx context.Context, _ *conn, p *params) (any, error) {
	p.bool("detailed") // JSON is always detailed
	var only []string
	for _, id := range p.strings("groupId") {
		gid, err := signalcli.ParseGroupID(id)
		if err != nil {
			p.fail("groupId", "a group id (base64)")
		}
		only = append(only, gid)
	}
	if p.err != nil {
		return nil, p.err
	}
	gs, err := s.account.Groups(ctx)
	if err != nil {
		return nil, err
	}
	if only != nil {
		gs = slices.DeleteFunc(gs, func(g cli.Group) bool { return !slices.Contains(only, g.ID) })
	}
	return signalcli.Groups(gs), nil
}

func (s *Server) listContacts(ctx context.Context, _ *conn, p *params) (any, error) {
	p.bool("detailed")
	p.bool("internal")
	p.bool("allRecipients")
	only, blocked, name := p.strings("recipient"), p.bool("blocked"), p.string("name")
	if p.err != nil {
		return nil, p.err
	}
	cs, err := s.account.Contacts(ctx)
	if err != nil {
		return nil, err
	}
	if blocked || name != "" { // parley blocks nobody and knows no names
		cs = nil
	}
	if only != nil {
		for i, n := range only {
			if pn, err := phone.Parse(n); err == nil {
				only[i] = pn.String()
			}
		}
		cs = slices.DeleteFunc(cs, func(c cli.Contact) bool { return !slices.Contains(only, c.Number) })
	}
	return signalcli.Contacts(cs), nil
}

func (s *Server) getUserStatus(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("getUserStatus", "username")
	numbers := p.strings("recipient")
	if p.err != nil {
		return nil, p.err
	}
	us, err := s.account.UserStatuses(ctx, numbers)
	if err != nil {
		return nil, err
	}
	return signalcli.UserStatuses(us), nil
}

func (s *Server) updateContact(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("updateContact", "name", "givenName", "familyName", "nickGivenName", "nickFamilyName", "note")
	recipient := p.string("recipient")
	t, ok := p.int64("expiration")
	if p.err != nil {
		return nil, p.err
	}
	if !ok {
		return nil, userError("updateContact: expiration (seconds, 0: off) is the contact setting parley has")
	}
	return struct{}{}, s.account.SetTimer(ctx, recipient, t)
}

func (s *Server) listIdentities(ctx context.Context, _ *conn, p *params) (any, error) {
	number := p.string("number")
	if p.err != nil {
		return nil, p.err
	}
	ids, err := s.account.Identities(ctx, number)
	if err != nil {
		return nil, err
	}
	return signalcli.Identities(ids), nil
}

func (s *Server) trust(ctx context.Context, _ *conn, p *params) (any, error) {
	recipient, verified, all := p.string("recipient"), p.string("verifiedSafetyNumber"), p.bool("trustAllKnownKeys")
	if p.err != nil {
		return nil, p.err
	}
	if (verified == "") == !all {
		return nil, userError("trust: give exactly one of verifiedSafetyNumber or trustAllKnownKeys")
	}
	return struct{}{}, s.account.Trust(ctx, recipient, verified)
}

func (s *Server) listDevices(ctx context.Context, _ *conn, p *params) (any, error) {
	ds, err := s.account.Devices(ctx)
	if err != nil {
		return nil, err
	}
	return signalcli.Devices(ds), nil
}

func (s *Server) removeDevice(ctx context.Context, _ *conn, p *params) (any, error) {
	id, ok := p.int64("deviceId")
	if p.err != nil {
		return nil, p.err
	}
	if !ok {
		return nil, userError("removeDevice: deviceId is required")
	}
	return struct{}{}, s.account.RemoveDevice(ctx, int(id))
}

func (s *Server) setPin(ctx context.Context, _ *conn, p *params) (any, error) {
	pin := p.string("pin")
	if p.err != nil {
		return nil, p.err
	}
	if pin == "" {
		return nil, userError("setPin: pin is required (removePin removes it)")
	}
	return struct{}{}, s.account.SetPin(ctx, pin)
}

func (s *Server) removePin(ctx context.Context, _ *conn, _ *params) (any, error) {
	return struct{}{}, s.account.SetPin(ctx, "")
}

func (s *Server) version(context.Context, *conn, *params) (any, error) {
	return map[string]string{"version": strings.TrimPrefix(version.String("parley"), "parley ")}, nil
}

func (s *Server) listAccounts(context.Context, *conn, *params) (any, error) {
	numbers, err := cli.Accounts(s.account.ConfigDir())
	if err != nil {
		return nil, err
	}
	out := make([]map[string]string, 0, len(numbers))
	for _, n := range numbers {
		out = append(out, map[string]string{"number": n})
	}
	return out, nil
}

func (s *Server) updateAccount(ctx context.Context, _ *conn, p *params) (any, error) {
	p.unsupported("updateAccount", "deviceName", "discoverableByNumber", "numberSharing", "username", "deleteUsername")
	_, set := p.m["unrestrictedUnidentifiedSender"]
	on := p.bool("unrestrictedUnidentifiedSender")
	if p.err != nil {
		return nil, p.err
	}
	if !set {
		return nil, userError("updateAccount: unrestrictedUnidentifiedSender is the account setting parley has")
	}
	return struct{}{}, s.account.SetUnrestrictedUnidentifiedAccess(ctx, on)
}

func (s *Server) subscribeReceive(_ context.Context, c *conn, _ *params) (any, error) {
	if s.mode != Manual {
		return nil, userError("subscribeReceive: envelopes are already pushed to every connection (start with --receive-mode=manual to subscribe)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextSub
	s.nextSub++
	c.subs[id] = true
	if id == 0 {
		close(s.subscribed)
	}
	return id, nil
}

func (s *Server) unsubscribeReceive(_ context.Context, c *conn, p *params) (any, error) {
	id, ok := p.int64("subscription")
	if p.err != nil {
		return nil, p.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || !c.subs[int(id)] {
		return nil, userError("unsubscribeReceive: no subscription %d on this connection", id)
	}
	delete(c.subs, int(id))
	return struct{}{}, nil
}

func (s *Server) whoami(context.Context, *conn, *params) (any, error) {
	a := s.account
	return map[string]any{"number": a.Number, "uuid": a.ID, "deviceId": a.DeviceID}, nil
}
