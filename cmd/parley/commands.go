package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/signalcli"
	"github.com/parleyhq/parley/safetynumber"
)

type command func(ctx context.Context, e *env, args []string) error

var commands map[string]command

func init() {
	commands = map[string]command{
		"register":       cmdRegister,
		"verify":         cmdVerify,
		"send":           cmdSend,
		"receive":        cmdReceive,
		"chat":           cmdChat,
		"sendTyping":     cmdSendTyping,
		"updateContact":  cmdUpdateContact,
		"link":           cmdLink,
		"updateGroup":    cmdUpdateGroup,
		"quitGroup":      cmdQuitGroup,
		"listGroups":     cmdListGroups,
		"addDevice":      cmdAddDevice,
		"listIdentities": cmdListIdentities,
		"trust":          cmdTrust,
		"setPin":         cmdSetPin,
		"removePin":      cmdRemovePin,
		"listDevices":    cmdListDevices,
		"removeDevice":   cmdRemoveDevice,
		"unregister":     cmdUnregister,
		"setPassphrase":  cmdSetPassphrase,
		"daemon":         cmdDaemon,
		"jsonRpc":        cmdJSONRPC,
		"sendReceipt":    cmdSendReceipt,
		"listContacts":   cmdListContacts,
		"getUserStatus":  cmdGetUserStatus,
		"listAccounts":   cmdListAccounts,
		"updateAccount":  cmdUpdateAccount,
		"setPush":        cmdSetPush,
		"removePush":     cmdRemovePush,
	}
}

// helpRequested is a command's -h or --help: run prints the command's
// usage and flags on stdout and exits 0.
type helpRequested struct{ fs *flag.FlagSet }

func (h helpRequested) Error() string { return h.fs.Name() + ": help requested" }

// parse parses a command's flags wherever they appear among its
// positional arguments (`trust +1555… --trust-all-known-keys`), and checks
// the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, minPos, maxPos int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpRequested{fs}
			}
			return nil, fmt.Errorf("%w: %s: %v", cli.ErrUsage, fs.Name(), err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < minPos || (maxPos >= 0 && len(pos) > maxPos) {
		return nil, fmt.Errorf("%w: %s: wrong number of arguments (parley help)", cli.ErrUsage, fs.Name())
	}
	return pos, nil
}

func open(ctx context.Context, e *env) (*cli.Account, error) {
	return cli.Open(ctx, e.opts)
}

// withAccount runs fn on the opened account and closes it.
func withAccount(ctx context.Context, e *env, fn func(*cli.Account) error) error {
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	return fn(a)
}

func cmdRegister(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	fs.String("pin", "", "accepted for signal-cli compatibility; give the PIN to verify")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if e.opts.Number == "" {
		return fmt.Errorf("%w: register needs the number: parley -a +15555550100 register", cli.ErrUsage)
	}
	e.opts.NewPassphrase = nil
	if p := passphraseSource("", "PARLEY_NEW_PASSPHRASE"); p != nil {
		e.opts.NewPassphrase, _ = p()
	}
	a, s, err := cli.Register(ctx, e.opts)
	if err != nil {
		return err
	}
	defer a.Close()
	fmt.Fprintf(e.stdout, "A verification code was sent to %s. Run: parley -a %s verify CODE\n"+
		"(a code expires after a few minutes; until %s, `parley -a %s register` again sends a new one)\n",
		a.Number, a.Number, time.UnixMilli(s.ExpiresAt).Format(time.TimeOnly), a.Number)
	return nil
}

func cmdVerify(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	pin := fs.String("pin", "", "registration-lock PIN, if the number has one")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Verify(ctx, strings.TrimSpace(pos[0]), *pin); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Registered %s (account %s, device %d).\n", a.Number, a.ID, a.DeviceID)
	return nil
}

func cmdSend(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	msg := fs.String("m", "", "message text")
	fs.StringVar(msg, "message", "", "message text")
	fromStdin := fs.Bool("message-from-stdin", false, "read the message from standard input")
	var files multiFlag
	fs.Var(&files, "a", "attach a `FILE` (repeatable)")
	fs.Var(&files, "attachment", "attach a `FILE` (repeatable)")
	group := fs.String("g", "", "send to the group with this `ID`")
	fs.StringVar(group, "group-id", "", "")
	noteToSelf := fs.Bool("note-to-self", false, "send to yourself (your other devices)")
	notifySelf := fs.Bool("notify-self", false, "a note to self arrives on your other devices as a new message, not a sent copy")
	minPos := 1
	if slices.Contains(args, "--note-to-self") || slices.Contains(args, "-g") || slices.Contains(args, "--group-id") || slices.ContainsFunc(args, func(s string) bool {
		return strings.HasPrefix(s, "-g=") || strings.HasPrefix(s, "--group-id=")
	}) {
		minPos = 0
	}
	recipients, err := parse(fs, args, minPos, -1)
	if err != nil {
		return err
	}
	text := *msg
	if *fromStdin {
		b, err := io.ReadAll(io.LimitReader(e.stdin, content.MaxText+1))
		if err != nil {
			return err
		}
		text = strings.TrimRight(string(b), "\n")
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	if *group != "" {
		if len(recipients) > 0 {
			return fmt.Errorf("%w: send -g GROUP takes no recipients", cli.ErrUsage)
		}
		if *noteToSelf {
			return fmt.Errorf("%w: send -g GROUP is not a note to self", cli.ErrUsage)
		}
		gid, err := groupArg(*group)
		if err != nil {
			return err
		}
		ts, err := a.SendGroup(ctx, gid, text, files)
		if err != nil {
			return err
		}
		return reportSent(e, cli.Sent{Timestamp: ts}, gid)
	}
	if *noteToSelf {
		recipients = append(recipients, a.Number)
	}
	sent, err := a.SendMessage(ctx, cli.Message{Text: text, Files: files, Recipients: recipients, NotifySelf: *notifySelf})
	if err != nil {
		return err
	}
	return reportSent(e, sent, "")
}

// reported is an error already printed; only its exit code matters.
type reported struct{ error }

func (r reported) Error() string { return r.error.Error() }
func (r reported) Unwrap() error { return r.error }

func cmdReceive(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("receive", flag.ContinueOnError)
	timeout := fs.Float64("timeout", 5, "seconds to wait for new messages after the queue is drained (negative: forever)")
	fs.Float64Var(timeout, "t", 5, "short for --timeout")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	read := fs.Bool("send-read-receipts", false, "mark received messages read")
	output := fs.String("output", "", "save attachments in `DIR` (default: the config directory's attachments folder)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	t := time.Duration(*timeout * float64(time.Second))
	if *timeout < 0 {
		t = -1
	}
	handle := printer(e.stdout, *asJSON)
	if e.json {
		enc := json.NewEncoder(e.stdout)
		handle = func(ev cli.Event) { enc.Encode(signalcli.Receive(a.Number, ev)) }
	}
	o := cli.ReceiveOptions{Timeout: t, SendReadReceipts: *read, OutputDir: *output, Handle: handle}
	if t < 0 {
		return receiveForever(ctx, a, o, logRetry(ctx, e))
	}
	return a.Receive(ctx, o)
}

// printer formats events for humans or as JSON lines in parley's flat
// shape (receive --json).
func printer(w io.Writer, asJSON bool) func(cli.Event) {
	enc := json.NewEncoder(w)
	return func(ev cli.Event) {
		if asJSON {
			enc.Encode(ev)
			return
		}
		fmt.Fprintln(w, formatEvent(ev))
	}
}

func who(ev cli.Event) string {
	if ev.Sender != "" {
		return ev.Sender
	}
	return ev.SenderAccount
}

func formatEvent(ev cli.Event) string {
	at := time.UnixMilli(ev.Timestamp).Format(time.DateTime)
	var b strings.Builder
	if ev.IdentityChanged {
		fmt.Fprintf(&b, "! The safety number with %s has changed (new identity key).", who(ev))
		if !ev.IdentityTrusted {
			fmt.Fprintf(&b, " Sending to them is blocked until you run: parley trust %s --verified-safety-number N", who(ev))
		}
		b.WriteByte('\n')
	}
	switch ev.Kind {
	case "message":
		if ev.Group != "" {
			fmt.Fprintf(&b, "[%s] %s in %q: %s", at, who(ev), ev.GroupName, ev.Text)
		} else {
			fmt.Fprintf(&b, "[%s] %s: %s", at, who(ev), ev.Text)
		}
		writeAttachments(&b, ev.Attachments)
	case "receipt":
		fmt.Fprintf(&b, "[%s] %s: %s receipt for %s", at, who(ev), ev.Receipt.Type, sentTimes(ev.Receipt.Timestamps))
	case "timer":
		fmt.Fprintf(&b, "[%s] %s %s", at, who(ev), timerText(ev.ExpireTimer))
	case "group_update":
		fmt.Fprintf(&b, "[%s] %s updated group %q (%s): members %s", at, who(ev), ev.GroupName, ev.Group, strings.Join(ev.Members, ", "))
		if ev.Removed {
			b.WriteString("; you are no longer a member")
		}
	case "sent":
		to := ev.Destination
		if to == "" {
			to = ev.DestinationAccount
		}
		if ev.Group != "" {
			to = fmt.Sprintf("group %q", ev.GroupName)
		}
		fmt.Fprintf(&b, "[%s] me (device %d) to %s: %s", at, ev.SenderDevice, to, ev.Text)
		writeAttachments(&b, ev.Attachments)
	case "typing":
		if ev.Typing.Started {
			fmt.Fprintf(&b, "%s is typing…", who(ev))
		} else {
			fmt.Fprintf(&b, "%s stopped typing", who(ev))
		}
	default:
		fmt.Fprintf(&b, "[%s] undecryptable envelope %s from %s.%d (acknowledged): %s", at, ev.EnvelopeID, who(ev), ev.SenderDevice, ev.Error)
	}
	return b.String()
}

func writeAttachments(b *strings.Builder, atts []cli.SavedAttachment) {
	for _, att := range atts {
		if att.Error != "" {
			fmt.Fprintf(b, "\n  attachment %q (%d bytes) not saved: %s", att.FileName, att.Size, att.Error)
		} else {
			fmt.Fprintf(b, "\n  attachment %q (%d bytes, %s) saved to %s", att.FileName, att.Size, att.ContentType, att.Path)
		}
	}
}

// timerText says what a disappearing-message timer change means.
func timerText(seconds int64) string {
	if seconds == 0 {
		return "turned disappearing messages off"
	}
	return "set disappearing messages to " + (time.Duration(seconds) * time.Second).String()
}

func cmdUpdateContact(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("updateContact", flag.ContinueOnError)
	expire := fs.Int64("e", -1, "disappearing-message timer in `SECONDS` (0: off)")
	fs.Int64Var(expire, "expiration", -1, "")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *expire < 0 {
		return fmt.Errorf("%w: updateContact needs -e SECONDS (0 turns disappearing messages off)", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error {
		if err := a.SetTimer(ctx, pos[0], *expire); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "You %s for %s\n", timerText(*expire), pos[0])
		return nil
	})
}

// sentTimes names the messages a receipt is for by when we sent them:
// "your message of 17:23:17", or several of them.
func sentTimes(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = time.UnixMilli(x).Format(time.TimeOnly)
	}
	if len(s) == 1 {
		return "your message of " + s[0]
	}
	return "your messages of " + strings.Join(s, ", ")
}

func cmdSendTyping(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("sendTyping", flag.ContinueOnError)
	stop := fs.Bool("stop", false, "send 'stopped typing'")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SendTyping(ctx, pos[0], !*stop) })
}

func cmdListIdentities(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("listIdentities", flag.ContinueOnError)
	number := fs.String("n", "", "only this number")
	fs.StringVar(number, "number", "", "")
	asJSON := fs.Bool("json", false, "JSON output")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	ids, err := a.Identities(ctx, *number)
	if err != nil {
		return err
	}
	if e.json {
		return writeJSON(e, signalcli.Identities(ids))
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(orEmpty(ids))
	}
	for _, id := range ids {
		name := id.Number
		if name == "" {
			name = id.Account
		}
		fmt.Fprintf(e.stdout, "%s: %s Added: %s Fingerprint: %s Safety Number: %s\n", name, id.TrustLevel,
			time.UnixMilli(id.AddedMS).Format(time.DateTime), id.Fingerprint, strings.ReplaceAll(safetynumber.Format(id.SafetyNumber), "\n", " "))
	}
	return nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func cmdTrust(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("trust", flag.ContinueOnError)
	sn := fs.String("verified-safety-number", "", "the safety number you compared")
	fs.StringVar(sn, "v", "", "")
	all := fs.Bool("trust-all-known-keys", false, "trust the current key without verifying it")
	fs.BoolVar(all, "a", false, "")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if (*sn == "") == !*all {
		return fmt.Errorf("%w: trust needs exactly one of --verified-safety-number N or --trust-all-known-keys", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.Trust(ctx, pos[0], *sn) })
}

func cmdSetPin(ctx context.Context, e *env, args []string) error {
	pos, err := parse(flag.NewFlagSet("setPin", flag.ContinueOnError), args, 1, 1)
	if err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SetPin(ctx, pos[0]) })
}

func cmdRemovePin(ctx context.Context, e *env, args []string) error {
	if _, err := parse(flag.NewFlagSet("removePin", flag.ContinueOnError), args, 0, 0); err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SetPin(ctx, "") })
}

func cmdListDevices(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("listDevices", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON output")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	ds, err := a.Devices(ctx)
	if err != nil {
		return err
	}
	if e.json {
		return writeJSON(e, signalcli.Devices(ds))
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(orEmpty(ds))
	}
	for _, d := range ds {
		this := ""
		if d.DeviceID == a.DeviceID {
			this = " (this device)"
		}
		fmt.Fprintf(e.stdout, "- Device %d%s\n  Created: %s\n  Last seen: %s\n", d.DeviceID, this, d.Created, d.LastSeen)
	}
	return nil
}

func cmdRemoveDevice(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("removeDevice", flag.ContinueOnError)
	id := fs.Int("d", 0, "device id")
	fs.IntVar(id, "device-id", 0, "")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *id < 1 {
		return fmt.Errorf("%w: removeDevice needs -d DEVICE_ID (see listDevices)", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.RemoveDevice(ctx, *id) })
}

func cmdUnregister(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("unregister", flag.ContinueOnError)
	del := fs.Bool("delete-local-account-data", false, "also delete keys, sessions and history on this machine")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.Unregister(ctx, *del) })
}

func cmdSetPassphrase(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("setPassphrase", flag.ContinueOnError)
	file := fs.String("new-passphrase-file", "", "file holding the new passphrase (empty file: remove it)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	src := passphraseSource(*file, "PARLEY_NEW_PASSPHRASE")
	if src == nil {
		return fmt.Errorf("%w: give the new passphrase in $PARLEY_NEW_PASSPHRASE or --new-passphrase-file", cli.ErrUsage)
	}
	pass, err := src()
	if err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SetPassphrase(pass) })
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdUpdateAccount(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("updateAccount", flag.ContinueOnError)
	unrestricted := fs.String("unrestricted-unidentified-sender", "", "`true`: anyone may send you sealed messages; false: only people you wrote to")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var on bool
	switch *unrestricted {
	case "true":
		on = true
	case "false":
	default:
		return fmt.Errorf("%w: updateAccount --unrestricted-unidentified-sender true|false", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SetUnrestrictedUnidentifiedAccess(ctx, on) })
}

func cmdSetPush(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("setPush", flag.ContinueOnError)
	endpoint := fs.String("webpush", "", "the Web Push (UnifiedPush) endpoint `URL` this device is woken at")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *endpoint == "" {
		return fmt.Errorf("%w: setPush --webpush URL (the endpoint your UnifiedPush distributor or push server gave)", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.SetWebPush(ctx, *endpoint) })
}

func cmdRemovePush(ctx context.Context, e *env, args []string) error {
	if _, err := parse(flag.NewFlagSet("removePush", flag.ContinueOnError), args, 0, 0); err != nil {
		return err
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.RemovePush(ctx) })
}
