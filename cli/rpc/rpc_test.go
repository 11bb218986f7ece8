package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/content"
)

// unregistered opens a real account whose registration never finished
// (its relay is unreachable): methods that need the relay fail at once,
// local ones read its real database.
func unregistered(tb testing.TB) *cli.Account {
	tb.Helper()
	o := cli.Options{Dir: tb.TempDir(), Number: "+12025550100", Server: "http://127.0.0.1:1"}
	if _, _, err := cli.Register(context.Background(), o); err == nil {
		tb.Fatal("registered without a relay")
	}
	a, err := cli.Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// exchange feeds input to a fresh connection and returns every line
// written back, decoded.
func exchange(t testing.TB, s *Server, input string) []map[string]any {
	var out bytes.Buffer
	s.Serve(context.Background(), strings.NewReader(input), &out)
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if l[0] == '[' {
			var batch []map[string]any
			if err := json.Unmarshal(l, &batch); err != nil {
				t.Fatalf("answer %q: %v", l, err)
			}
			lines = append(lines, map[string]any{"batch": batch})
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("answer %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func errCode(m map[string]any) any {
	e, _ := m["error"].(map[string]any)
	return e["code"]
}

// Malformed, hostile and unsupported requests get signal-cli's JSON-RPC
// errors, each answered once, notifications never.
func TestHostileRequests(t *testing.T) {
	s := New(unregistered(t), OnStart, slog.New(slog.DiscardHandler))
	for _, c := range []struct {
		name, line string
		code       float64
	}{
		{"not JSON", `{"jsonrpc":"2.0","method":`, CodeParse},
		{"no method", `{"jsonrpc":"2.0","id":1}`, CodeInvalidRequest},
		{"wrong version", `{"jsonrpc":"1.0","method":"version","id":1}`, CodeInvalidRequest},
		{"not an object", `"send"`, CodeInvalidRequest},
		{"empty batch", `[]`, CodeInvalidRequest},
		{"unknown method", `{"jsonrpc":"2.0","method":"sendReaction","id":1}`, CodeMethodNotFound},
		{"params a list", `{"jsonrpc":"2.0","method":"send","params":["+12025550101"],"id":1}`, CodeInvalidParams},
		{"recipient a number", `{"jsonrpc":"2.0","method":"send","params":{"recipient":12025550101,"message":"x"},"id":1}`, CodeInvalidParams},
		{"timestamps as text", `{"jsonrpc":"2.0","method":"sendReceipt","params":{"recipient":"+12025550101","targetTimestamp":"x"},"id":1}`, CodeInvalidParams},
		{"bad group id", `{"jsonrpc":"2.0","method":"send","params":{"groupId":"not base64!","message":"x"},"id":1}`, CodeInvalidParams},
		{"two groups", `{"jsonrpc":"2.0","method":"send","params":{"groupIds":["AAAA","BBBB"],"message":"x"},"id":1}`, CodeInvalidParams},
		{"unsupported feature", `{"jsonrpc":"2.0","method":"send","params":{"recipient":"+12025550101","message":"x","sticker":"a:1"},"id":1}`, CodeUserError},
		{"viewed receipts", `{"jsonrpc":"2.0","method":"sendReceipt","params":{"recipient":"+12025550101","targetTimestamp":1,"type":"viewed"},"id":1}`, CodeUserError},
		{"another account", `{"jsonrpc":"2.0","method":"listGroups","params":{"account":"+12025550199"},"id":1}`, CodeUserError},
		{"subscribe while pushed", `{"jsonrpc":"2.0","method":"subscribeReceive","id":1}`, CodeUserError},
		{"not registered", `{"jsonrpc":"2.0","method":"send","params":{"recipient":"+12025550101","message":"x"},"id":1}`, CodeUserError},
	} {
		got := exchange(t, s, c.line+"\n")
		if len(got) != 1 || errCode(got[0]) != c.code {
			t.Errorf("%s: %v, want one error %v", c.name, got, c.code)
		}
	}
	long := `{"jsonrpc":"2.0","method":"send","params":{"message":"` + strings.Repeat("x", MaxLine) + `"},"id":1}` + "\n"
	if got := exchange(t, s, long); len(got) != 1 || errCode(got[0]) != float64(CodeInvalidRequest) {
		t.Errorf("oversized line: %v", got)
	}
	// A notification (no id) is never answered, even when it fails.
	if got := exchange(t, s, `{"jsonrpc":"2.0","method":"nope"}`+"\n"+`{"jsonrpc":"2.0","method":"send"}`+"\n"); len(got) != 0 {
		t.Errorf("notifications answered: %v", got)
	}
	// A batch answers its requests in one array, skipping notifications.
	got := exchange(t, s, `[{"jsonrpc":"2.0","method":"version","id":1},{"jsonrpc":"2.0","method":"version"},{"jsonrpc":"2.0","method":"nope","id":2}]`+"\n")
	batch, _ := got[0]["batch"].([]map[string]any)
	if len(got) != 1 || len(batch) != 2 || batch[0]["result"] == nil || errCode(batch[1]) != float64(CodeMethodNotFound) {
		t.Errorf("batch: %v", got)
	}
}

// Parameters are read as signal-cli reads them: singular or plural, one
// value or a list, unknown names ignored.
func TestParamsLikeSignalCLI(t *testing.T) {
	p, perr := parseParams(json.RawMessage(`{"recipients":["+1","+2"],"attachment":"a.png","targetTimestamp":5,"extra":{"x":1},"stop":false}`))
	if perr != nil {
		t.Fatal(perr)
	}
	if got := p.strings("recipient"); len(got) != 2 || got[1] != "+2" {
		t.Errorf("recipients: %v", got)
	}
	if got := p.strings("attachment"); len(got) != 1 || got[0] != "a.png" {
		t.Errorf("attachment: %v", got)
	}
	if got := p.int64s("targetTimestamp"); len(got) != 1 || got[0] != 5 {
		t.Errorf("targetTimestamp: %v", got)
	}
	p.unsupported("send", "stop") // false is as good as absent
	if err := p.done(slog.New(slog.DiscardHandler), "send"); err != nil {
		t.Errorf("unknown parameter refused: %v", err)
	}
}

// In manual receive mode only subscriptions get envelopes, wrapped with
// their id; receiving waits for the first one.
func TestManualReceiveMode(t *testing.T) {
	s := New(unregistered(t), Manual, slog.New(slog.DiscardHandler))
	select {
	case <-s.Subscribed():
		t.Fatal("subscribed before any subscription")
	default:
	}
	in, feed := io.Pipe()
	out, sink := io.Pipe()
	go s.Serve(context.Background(), in, sink)
	lines := bufio.NewScanner(out)
	send := func(l string) map[string]any {
		io.WriteString(feed, l+"\n")
		if !lines.Scan() {
			t.Fatal("connection closed")
		}
		var m map[string]any
		json.Unmarshal(lines.Bytes(), &m)
		return m
	}
	if r := send(`{"jsonrpc":"2.0","method":"subscribeReceive","id":1}`); r["result"] != 0.0 {
		t.Fatalf("subscribeReceive: %v", r)
	}
	<-s.Subscribed()
	go s.Notify(cli.Event{Kind: "receipt", SenderAccount: "acct", Sender: "+12025550101", SenderDevice: 1, Timestamp: 7,
		Receipt: &content.Receipt{Type: content.Read, Timestamps: []int64{5}}})
	if !lines.Scan() {
		t.Fatal("no notification")
	}
	var n struct {
		Method string
		Params struct {
			Subscription int
			Result       struct {
				Account  string
				Envelope struct {
					SourceNumber   string
					ReceiptMessage struct {
						IsRead     bool
						Timestamps []int64
					}
				}
			}
		}
	}
	if err := json.Unmarshal(lines.Bytes(), &n); err != nil || n.Method != "receive" || n.Params.Subscription != 0 ||
		n.Params.Result.Account != "+12025550100" || !n.Params.Result.Envelope.ReceiptMessage.IsRead ||
		n.Params.Result.Envelope.SourceNumber != "+12025550101" {
		t.Fatalf("notification %s", lines.Bytes())
	}
	if r := send(`{"jsonrpc":"2.0","method":"unsubscribeReceive","params":{"subscription":0},"id":2}`); r["error"] != nil {
		t.Fatalf("unsubscribeReceive: %v", r)
	}
	if r := send(`{"jsonrpc":"2.0","method":"unsubscribeReceive","params":{"subscription":0},"id":3}`); errCode(r) != float64(CodeUserError) {
		t.Fatalf("second unsubscribeReceive: %v", r)
	}
	feed.Close()
}

// FuzzRequestLines: no input line panics the server or makes it write
// anything but JSON-RPC 2.0 answers.
func FuzzRequestLines(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","method":"send","params":{"recipient":["+12025550101"],"message":"hi"},"id":1}`,
		`{"jsonrpc":"2.0","method":"updateGroup","params":{"name":"x","members":"+12025550101"},"id":"a"}`,
		`[{"jsonrpc":"2.0","method":"listGroups","id":1},{"jsonrpc":"2.0","method":"listContacts","params":{"recipient":"+1"}}]`,
		`{"jsonrpc":"2.0","method":"sendReceipt","params":{"recipient":"+1","targetTimestamps":[1,2]},"id":null}`,
		`{"jsonrpc":"2.0","method":"subscribeReceive","id":1}`,
		`{"jsonrpc":"2.0","method":"unsubscribeReceive","params":{"subscription":-1},"id":1}`,
		`{"jsonrpc":"2.0","method":"listIdentities","params":{"number":"+12025550101"},"id":1}`,
	} {
		f.Add([]byte(seed))
	}
	s := New(unregistered(f), Manual, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, line []byte) {
		line = bytes.ReplaceAll(line, []byte("\n"), []byte(" "))
		for _, m := range exchange(t, s, string(line)+"\n") {
			if b, ok := m["batch"].([]map[string]any); ok {
				for _, r := range b {
					if r["jsonrpc"] != "2.0" {
						t.Fatalf("batch answer %v", r)
					}
				}
				continue
			}
			if m["jsonrpc"] != "2.0" || (m["result"] == nil) == (m["error"] == nil) {
				t.Fatalf("answer %v", m)
			}
		}
	})
}
