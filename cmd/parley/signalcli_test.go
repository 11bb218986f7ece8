package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sdkBot is parley driven by signal-sdk, a third-party client of
// signal-cli's JSON-RPC, through testdata/signal-sdk-driver.js: signal-sdk
// spawns `parley -a NUMBER jsonRpc` exactly as it spawns signal-cli.
type sdkBot struct {
	t      *testing.T
	stdin  io.WriteCloser
	lines  chan map[string]any
	events []map[string]any // received notifications not yet looked at
	nextID int
}

func startSDKBot(t *testing.T, u *user, xdg string) *sdkBot {
	t.Helper()
	modules := os.Getenv("PARLEY_SIGNAL_SDK_NODE_MODULES")
	if modules == "" {
		if os.Getenv("PARLEY_SIGNAL_SDK_REQUIRED") != "" {
			t.Fatal("PARLEY_SIGNAL_SDK_NODE_MODULES is not set (scripts/with-signal-sdk sets it)")
		}
		t.Skip("signal-sdk not installed: run through scripts/with-signal-sdk (make test does)")
	}
	c := exec.Command("node", "testdata/signal-sdk-driver.js", parleyBin, u.number)
	c.Env = append(os.Environ(), "NODE_PATH="+modules, "XDG_DATA_HOME="+xdg, "PARLEY_SERVER="+u.server)
	stdin, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	b := &sdkBot{t: t, stdin: stdin, lines: make(chan map[string]any, 64)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"unparsable": sc.Text()}
			}
			b.lines <- m
		}
		close(b.lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("driver stderr:\n%s", stderr.String())
		}
	})
	if m := b.next("ready"); m["ready"] != true {
		t.Fatalf("driver: %v", m)
	}
	return b
}

// next returns the driver's next line that is not a notification;
// notifications are kept for event.
func (b *sdkBot) next(what string) map[string]any {
	b.t.Helper()
	for {
		select {
		case m, ok := <-b.lines:
			if !ok {
				b.t.Fatalf("the driver exited waiting for %s", what)
			}
			if e, ok := m["event"].(map[string]any); ok {
				b.events = append(b.events, e)
				continue
			}
			if m["sdkError"] != nil || m["fatal"] != nil || m["unparsable"] != nil {
				b.t.Fatalf("waiting for %s: %v", what, m)
			}
			return m
		case <-time.After(30 * time.Second):
			b.t.Fatalf("nothing from the driver waiting for %s", what)
		}
	}
}

// call runs a SignalCli method and returns its result, or its error text
// with ok false.
func (b *sdkBot) call(method string, args ...any) (result any, errText string) {
	b.t.Helper()
	b.nextID++
	if args == nil {
		args = []any{}
	}
	line, _ := json.Marshal(map[string]any{"id": b.nextID, "method": method, "args": args})
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		b.t.Fatal(err)
	}
	m := b.next(method)
	if m["id"] != float64(b.nextID) {
		b.t.Fatalf("%s: answer %v", method, m)
	}
	if e, ok := m["error"].(string); ok {
		return nil, e
	}
	return m["result"], ""
}

// ok is call that fails the test on an error.
func (b *sdkBot) ok(method string, args ...any) any {
	b.t.Helper()
	r, e := b.call(method, args...)
	if e != "" {
		b.t.Fatalf("%s%v: %s", method, args, e)
	}
	return r
}

// event waits for a received notification that match accepts.
func (b *sdkBot) event(what string, match func(env map[string]any) bool) map[string]any {
	b.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for i, e := range b.events {
			env, _ := e["envelope"].(map[string]any)
			if env != nil && match(env) {
				b.events = slices.Delete(b.events, i, i+1)
				return e
			}
		}
		select {
		case m, ok := <-b.lines:
			if !ok {
				b.t.Fatalf("the driver exited waiting for %s", what)
			}
			e, isEvent := m["event"].(map[string]any)
			if !isEvent {
				b.t.Fatalf("waiting for %s: %v", what, m)
			}
			b.events = append(b.events, e)
		case <-deadline:
			b.t.Fatalf("no %s among %v", what, b.events)
		}
	}
}

// path reads a nested field: path(v, "results", 0, "type").
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestSignalSDKDrivesParley: a bot written against signal-cli's JSON-RPC
// (signal-sdk's SignalCli, unchanged, pointed at the parley binary) sends,
// receives, marks read, types, runs a group and looks people up, with
// parley users on the other side; results and notifications arrive in
// signal-cli's shapes.
func TestSignalSDKDrivesParley(t *testing.T) {
	server := relay(t, "sqlite")
	xdg := t.TempDir()
	bot := &user{t: t, number: newUser(t, server, 0).number, config: filepath.Join(xdg, "parley"), server: server}
	bob, carol := newUser(t, server, 1), newUser(t, server, 2)
	bot.register()
	bob.register()
	carol.register()
	sdk := startSDKBot(t, bot, xdg)

	if v := path(sdk.ok("getVersion"), "version"); v == nil || v == "" {
		t.Errorf("version: %v", v)
	}

	// Send, and the reply as a notification with sender and account.
	sent := sdk.ok("sendMessage", bob.number, "hello from a signal-cli bot")
	ts, _ := path(sent, "timestamp").(float64)
	if ts == 0 || path(sent, "results", 0, "type") != "SUCCESS" || path(sent, "results", 0, "recipientAddress", "number") != bob.number {
		t.Fatalf("sendMessage: %v", sent)
	}
	if got := strings.Join(messages(bob.receive()), "|"); got != bot.number+": hello from a signal-cli bot" {
		t.Fatalf("bob received %q", got)
	}
	bob.ok("send", "-m", "hi bot", bot.number)
	reply := sdk.event("bob's reply", func(env map[string]any) bool { return path(env, "dataMessage", "message") == "hi bot" })
	env := reply["envelope"].(map[string]any)
	if reply["account"] != bot.number || env["sourceNumber"] != bob.number || env["source"] != bob.number ||
		env["sourceUuid"] == nil || env["sourceDevice"] != 1.0 || path(env, "dataMessage", "timestamp") != env["timestamp"] {
		t.Errorf("reply notification: %v", reply)
	}
	// Bob's `receive` sent a delivery receipt for the bot's message.
	sdk.event("delivery receipt", func(env map[string]any) bool {
		return path(env, "receiptMessage", "isDelivery") == true && path(env, "receiptMessage", "timestamps", 0) == ts
	})

	// A read receipt from the bot reaches bob.
	replyTS := env["timestamp"].(float64)
	sdk.ok("sendReceipt", bob.number, replyTS, "read") // signal-sdk drops the result
	read := false
	for _, e := range bob.receive() {
		read = read || (e.Type == "receipt" && e.Receipt.Type == "read")
	}
	if !read {
		t.Error("bob got no read receipt")
	}

	// Typing, both ways, while the other side's socket is live.
	recv := bob.cmd("receive", "--json", "--timeout", "4")
	var typing bytes.Buffer
	recv.Stdout = &typing
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	sdk.ok("sendTyping", bob.number)
	if err := recv.Wait(); err != nil || !strings.Contains(typing.String(), `"type":"typing"`) {
		t.Errorf("bob saw no typing from the bot (%v):\n%s", err, typing.String())
	}
	bob.ok("sendTyping", bot.number)
	sdk.event("bob typing", func(env map[string]any) bool { return path(env, "typingMessage", "action") == "STARTED" })

	// A group: created, listed, written to both ways, renamed, left.
	created := sdk.ok("createGroup", "Ops", []string{bob.number, carol.number})
	gid, _ := path(created, "groupId").(string)
	if !strings.HasSuffix(gid, "=") || path(created, "timestamp") == nil {
		t.Fatalf("createGroup: %v", created)
	}
	groups := sdk.ok("listGroups")
	if path(groups, 0, "id") != gid || path(groups, 0, "name") != "Ops" || len(path(groups, 0, "members").([]any)) != 3 {
		t.Errorf("listGroups: %v", groups)
	}
	bob.receive() // the group
	if r := sdk.ok("sendMessage", gid, "to the group"); path(r, "timestamp") == nil {
		t.Errorf("group send: %v", r)
	}
	if out := bob.ok("receive", "--timeout", "1"); !strings.Contains(out, `in "Ops": to the group`) {
		t.Errorf("bob's group message:\n%s", out)
	}
	bob.ok("send", "-g", gid, "-m", "bob to the group") // signal-cli's group id form
	g := sdk.event("group message", func(env map[string]any) bool {
		return path(env, "dataMessage", "message") == "bob to the group"
	})
	if info := path(g, "envelope", "dataMessage", "groupInfo"); path(info, "groupId") != gid || path(info, "type") != "DELIVER" || path(info, "groupName") != "Ops" {
		t.Errorf("group message's groupInfo: %v", info)
	}
	sdk.ok("updateGroup", gid, map[string]any{"name": "Ops room"})
	if out := carol.ok("listGroups"); !strings.Contains(carol.ok("receive", "--timeout", "1")+out, "Ops room") {
		t.Errorf("carol did not see the rename")
	}

	// People: contacts known, numbers looked up.
	contacts := sdk.ok("listContacts")
	var numbers []string
	for _, c := range contacts.([]any) {
		numbers = append(numbers, path(c, "number").(string))
	}
	slices.Sort(numbers)
	if want := []string{bob.number, carol.number}; !slices.Equal(numbers, want) {
		t.Errorf("listContacts: %v, want %v", numbers, want)
	}
	// signal-sdk's getUserStatus reads a shape signal-cli never wrote, so
	// the bot calls the method itself, as signal-cli documents it.
	nobody := newUser(t, server, 7).number
	st := sdk.ok("sendJsonRpcRequest", "getUserStatus", map[string]any{"recipient": []string{bob.number, nobody}})
	if path(st, 0, "isRegistered") != true || path(st, 0, "uuid") == nil || path(st, 1, "isRegistered") != false || path(st, 1, "number") != nobody {
		t.Errorf("getUserStatus: %v", st)
	}
	if accts := sdk.ok("sendJsonRpcRequest", "listAccounts", nil); path(accts, 0, "number") != bot.number {
		t.Errorf("listAccounts: %v", accts)
	}

	sdk.ok("quitGroup", gid)
	if out := bob.ok("receive", "--timeout", "1"); !strings.Contains(out, "Ops room") {
		t.Errorf("bob did not hear the bot leave:\n%s", out)
	}

	// Errors come back as signal-cli's codes.
	if _, e := sdk.call("sendMessage", "+1", "x"); !strings.HasPrefix(e, "[-1] ") {
		t.Errorf("send to a malformed number: %q", e)
	}
	if _, e := sdk.call("sendReaction", bob.number, bob.number, replyTS, "👍"); !strings.HasPrefix(e, "[-32601] ") {
		t.Errorf("a method parley lacks: %q", e)
	}
	if _, e := sdk.call("sendMessage", bob.number, "once", map[string]any{"isViewOnce": true}); e != "" {
		// signal-sdk names it isViewOnce, which signal-cli ignores too.
		t.Errorf("unknown parameter: %q", e)
	}
}

// jsonLines decodes one JSON value per line of out.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var ms []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON object per line: %q", l)
		}
		ms = append(ms, m)
	}
	return ms
}

// TestOutputJSON: `parley -o json COMMAND` prints what signal-cli prints
// with -o json (the flat `receive --json` stays as it was).
func TestOutputJSON(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()

	var sent map[string]any
	json.Unmarshal([]byte(alice.ok("-o", "json", "send", "-m", "json please", bob.number)), &sent)
	if path(sent, "results", 0, "type") != "SUCCESS" || path(sent, "timestamp") == nil {
		t.Fatalf("send: %v", sent)
	}
	got := jsonLines(t, bob.ok("-o", "json", "receive", "--timeout", "0.5"))
	if len(got) != 1 || path(got[0], "envelope", "dataMessage", "message") != "json please" || path(got[0], "account") != bob.number {
		t.Fatalf("receive: %v", got)
	}
	var rcpt map[string]any
	json.Unmarshal([]byte(bob.ok("-o", "json", "sendReceipt", alice.number, "-t", fmt.Sprint(int64(path(sent, "timestamp").(float64))))), &rcpt)
	if path(rcpt, "results", 0, "type") != "SUCCESS" {
		t.Errorf("sendReceipt: %v", rcpt)
	}
	// The delivery receipt bob's receive sent, then the read receipt.
	evs := jsonLines(t, alice.ok("-o", "json", "receive", "--timeout", "0.5"))
	if len(evs) != 2 || path(evs[0], "envelope", "receiptMessage", "isDelivery") != true || path(evs[1], "envelope", "receiptMessage", "isRead") != true {
		t.Errorf("receipts: %v", evs)
	}

	var created map[string]any
	json.Unmarshal([]byte(alice.ok("-o", "json", "updateGroup", "-n", "Crew", "-m", bob.number)), &created)
	gid, _ := created["groupId"].(string)
	var groups []map[string]any
	json.Unmarshal([]byte(alice.ok("-o", "json", "listGroups")), &groups)
	if gid == "" || len(groups) != 1 || groups[0]["id"] != gid || groups[0]["name"] != "Crew" {
		t.Errorf("updateGroup %v, listGroups %v", created, groups)
	}
	var contacts, statuses, accounts, ids, devices []map[string]any
	json.Unmarshal([]byte(alice.ok("-o", "json", "listContacts")), &contacts)
	json.Unmarshal([]byte(alice.ok("-o", "json", "getUserStatus", bob.number, newUser(t, server, 5).number)), &statuses)
	json.Unmarshal([]byte(alice.ok("-o", "json", "listAccounts")), &accounts)
	json.Unmarshal([]byte(alice.ok("-o", "json", "listIdentities")), &ids)
	json.Unmarshal([]byte(alice.ok("-o", "json", "listDevices")), &devices)
	if len(contacts) != 1 || contacts[0]["number"] != bob.number {
		t.Errorf("listContacts: %v", contacts)
	}
	if len(statuses) != 2 || statuses[0]["isRegistered"] != true || statuses[1]["isRegistered"] != false {
		t.Errorf("getUserStatus: %v", statuses)
	}
	if len(accounts) != 1 || accounts[0]["number"] != alice.number {
		t.Errorf("listAccounts: %v", accounts)
	}
	if len(ids) != 1 || ids[0]["number"] != bob.number || ids[0]["trustLevel"] != "TRUSTED_UNVERIFIED" || ids[0]["safetyNumber"] == "" {
		t.Errorf("listIdentities: %v", ids)
	}
	if len(devices) != 1 || devices[0]["id"] != 1.0 || devices[0]["createdTimestamp"] == 0.0 {
		t.Errorf("listDevices: %v", devices)
	}
	var v map[string]any
	if json.Unmarshal([]byte(alice.ok("-o", "json", "version")), &v); v["version"] == nil {
		t.Errorf("version: %v", v)
	}
	if _, errs, code := alice.run("", "-o", "yaml", "version"); code != 1 || !strings.Contains(errs, "plain-text or json") {
		t.Errorf("-o yaml: exit %d, %s", code, errs)
	}
	// Plain text for the new commands.
	if out := alice.ok("getUserStatus", bob.number); out != bob.number+": true\n" {
		t.Errorf("getUserStatus: %q", out)
	}
	if out := alice.ok("listContacts"); !strings.HasPrefix(out, "Number: "+bob.number+" ") {
		t.Errorf("listContacts: %q", out)
	}
}

// TestNoteToSelf: a message to one's own number reaches one's other
// devices as a copy of a sent message, or with --notify-self as a new
// message; with no other device it is only recorded.
func TestNoteToSelf(t *testing.T) {
	server := relay(t, "sqlite")
	alice := newUser(t, server, 0)
	alice.register()
	if out := alice.ok("send", "-m", "alone", alice.number); strings.TrimSpace(out) == "" {
		t.Fatal("a note to self with no other device printed no timestamp")
	}
	laptop, _ := linkDevice(t, alice, server)
	alice.ok("send", "--note-to-self", "-m", "remember the milk")
	if evs := laptop.events(); !has(evs, syncEvent{Type: "sent", Sender: alice.number, Destination: alice.number, Text: "remember the milk"}) {
		t.Errorf("note to self on the laptop: %+v", evs)
	}
	alice.ok("send", "--notify-self", "-m", "ping me", alice.number)
	if evs := laptop.events(); !has(evs, syncEvent{Type: "message", Sender: alice.number, Text: "ping me"}) {
		t.Errorf("--notify-self on the laptop: %+v", evs)
	}
}

// TestDaemonListeners: `daemon --socket` (signal-cli's optional-value
// form, default path under $XDG_RUNTIME_DIR) and `--tcp HOST:PORT` serve
// the same JSON-RPC; --receive-mode=manual waits for subscribeReceive.
func TestDaemonListeners(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	runtime := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp := l.Addr().String()
	l.Close()
	d := alice.cmd("daemon", "--socket", "--tcp", tcp, "--no-stdio", "--receive-mode=manual")
	d.Env = append(d.Env, "XDG_RUNTIME_DIR="+runtime)
	var stderr bytes.Buffer
	d.Stderr = &stderr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Signal(os.Interrupt); d.Wait() })
	socket := filepath.Join(runtime, "parley", "socket")
	dial := func(network, addr string) (net.Conn, *bufio.Scanner) {
		t.Helper()
		for i := 0; ; i++ {
			c, err := net.Dial(network, addr)
			if err == nil {
				t.Cleanup(func() { c.Close() })
				return c, bufio.NewScanner(c)
			}
			if i == 100 {
				t.Fatalf("daemon not listening on %s %s: %v\n%s", network, addr, err, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	rpcCall := func(c net.Conn, sc *bufio.Scanner, req string) map[string]any {
		t.Helper()
		io.WriteString(c, req+"\n")
		if !sc.Scan() {
			t.Fatalf("%s: connection closed", req)
		}
		var m map[string]any
		json.Unmarshal(sc.Bytes(), &m)
		return m
	}
	uc, us := dial("unix", socket)
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	tc, ts := dial("tcp", tcp)
	if r := rpcCall(tc, ts, `{"jsonrpc":"2.0","method":"send","params":{"recipient":"`+bob.number+`","message":"over tcp"},"id":1}`); path(r, "result", "results", 0, "type") != "SUCCESS" {
		t.Fatalf("send over TCP: %v", r)
	}
	bob.ok("send", "-m", "for the subscriber", alice.number)
	if r := rpcCall(uc, us, `{"jsonrpc":"2.0","method":"subscribeReceive","id":"s"}`); r["result"] != 0.0 {
		t.Fatalf("subscribeReceive: %v", r)
	}
	for us.Scan() { // the receipt for "over tcp" may come first
		var n map[string]any
		json.Unmarshal(us.Bytes(), &n)
		if path(n, "params", "subscription") != 0.0 {
			t.Fatalf("notification without its subscription: %v", n)
		}
		if path(n, "params", "result", "envelope", "dataMessage", "message") == "for the subscriber" {
			return
		}
	}
	t.Fatal("the subscriber got no message")
}
