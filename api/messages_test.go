package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/wire"
)

// socket is a device's delivery WebSocket, as a client holds it.
type socket struct {
	t  testing.TB
	ws *websocket.Conn
}

func (e *env) dial(c *creds) (*socket, *http.Response, error) {
	h := http.Header{}
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(c.Account+"."+strconv.Itoa(c.Device), c.Secret)
	h.Set("Authorization", req.Header.Get("Authorization"))
	d := *websocket.DefaultDialer
	if e.srv.TLS != nil {
		d.TLSClientConfig = e.srv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(e.srv.URL, "http")+"/v1/websocket", h)
	if err != nil {
		return nil, resp, err
	}
	s := &socket{t: e.t, ws: ws}
	e.t.Cleanup(func() { ws.Close() })
	return s, resp, nil
}

func (e *env) connect(c *creds) *socket {
	e.t.Helper()
	s, resp, err := e.dial(c)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("connect %s.%d: %v (HTTP %d)", c.Account, c.Device, err, status)
	}
	return s
}

// next reads one frame, failing the test after timeout.
func (s *socket) next(timeout time.Duration) (wire.Frame, error) {
	s.ws.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := s.ws.ReadMessage()
	if err != nil {
		return wire.Frame{}, err
	}
	if typ != websocket.TextMessage {
		s.t.Fatalf("relay sent frame type %d", typ)
	}
	var f wire.Frame
	if err := stdjson.Unmarshal(data, &f); err != nil {
		s.t.Fatalf("relay sent %q: %v", data, err)
	}
	return f, nil
}

// drain reads envelopes up to and including queue_empty.
func (s *socket) drain() []*wire.Envelope {
	s.t.Helper()
	var out []*wire.Envelope
	for {
		f, err := s.next(5 * time.Second)
		if err != nil {
			s.t.Fatalf("waiting for queue_empty: %v", err)
		}
		if f.Type == wire.FrameQueueEmpty {
			return out
		}
		out = append(out, f.Envelope)
	}
}

func (s *socket) envelope() *wire.Envelope {
	s.t.Helper()
	f, err := s.next(5 * time.Second)
	if err != nil || f.Type != wire.FrameEnvelope {
		s.t.Fatalf("want an envelope, got %+v, %v", f, err)
	}
	return f.Envelope
}

func (s *socket) ack(es ...*wire.Envelope) {
	s.t.Helper()
	f := wire.Frame{Type: wire.FrameAck}
	for _, e := range es {
		f.IDs = append(f.IDs, e.ID)
	}
	if err := s.ws.WriteJSON(f); err != nil {
		s.t.Fatal(err)
	}
}

// closed waits for the relay to close the socket and returns the code.
func (s *socket) closed() int {
	s.t.Helper()
	for {
		_, err := s.next(5 * time.Second)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			s.t.Fatalf("want a close frame, got %v", err)
		}
	}
}

type msg struct {
	Device, RegID, Type int
	Content             []byte
}

// send sends one envelope per msg from c to the account `to`.
func (e *env) send(c *creds, to string, extra map[string]any, key string, msgs ...msg) response {
	e.t.Helper()
	body := map[string]any{"timestamp": 1_700_000_000_000}
	var list []map[string]any
	for _, m := range msgs {
		list = append(list, map[string]any{"device_id": m.Device, "registration_id": m.RegID, "type": m.Type, "content": base64.StdEncoding.EncodeToString(m.Content)})
	}
	body["messages"] = list
	for k, v := range extra {
		body[k] = v
	}
	raw, _ := stdjson.Marshal(body)
	if key == "" {
		return e.call("PUT", "/v1/messages/"+to, c, raw, true)
	}
	return e.callHeader("PUT", "/v1/messages/"+to, c, raw, http.Header{"Idempotency-Key": {key}}, false)
}

func text(s string) msg { return msg{Device: 1, RegID: 1234, Type: 3, Content: []byte(s)} }

func TestSendAndReceive(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)

	// Offline delivery: queued before Bob connects, delivered in order.
	for i := range 3 {
		r := e.send(alice, bob.Account, map[string]any{"urgent": true}, "", text(fmt.Sprint("offline ", i)))
		if r.Status != 200 || r.Body["server_timestamp"] == nil {
			t.Fatalf("send: %d %s", r.Status, r.Raw)
		}
	}
	ws := e.connect(bob)
	got := ws.drain()
	if len(got) != 3 {
		t.Fatalf("drained %d envelopes, want 3", len(got))
	}
	for i, env := range got {
		if string(env.Content) != fmt.Sprint("offline ", i) || env.Type != 3 || env.SourceAccount.String() != alice.Account ||
			env.SourceDevice != 1 || env.Timestamp != 1_700_000_000_000 || env.ServerTimestamp == 0 || !env.Urgent || env.ExpiresAt == 0 {
			t.Errorf("envelope %d = %+v", i, env)
		}
	}
	ws.ack(got...)

	// Live delivery: pushed as it arrives.
	if r := e.send(alice, bob.Account, nil, "", text("live")); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	live := ws.envelope()
	if string(live.Content) != "live" || live.Urgent {
		t.Errorf("live envelope = %+v", live)
	}
	ws.ack(live)

	// Bob answers; Alice receives.
	wa := e.connect(alice)
	if q := wa.drain(); len(q) != 0 {
		t.Fatalf("Alice's queue holds %d", len(q))
	}
	e.send(bob, alice.Account, nil, "", text("reply"))
	if r := wa.envelope(); string(r.Content) != "reply" || r.SourceAccount.String() != bob.Account {
		t.Errorf("reply = %+v", r)
	}

	// Everything acknowledged is gone: a new connection finds nothing.
	ws.ws.Close()
	waitFor(t, func() bool { return rowCount(t, e, "envelopes") == 1 }) // Alice's unacknowledged reply
	if q := e.connect(bob).drain(); len(q) != 0 {
		t.Errorf("acknowledged envelopes delivered again: %d", len(q))
	}
}

func TestUnacknowledgedAreRedelivered(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	for i := range 4 {
		e.send(alice, bob.Account, nil, "", text(fmt.Sprint(i)))
	}
	ws := e.connect(bob)
	first := ws.drain()
	ws.ack(first[0], first[2])
	// An ack for an unknown id is harmless.
	ws.ack(&wire.Envelope{ID: first[0].ID}, &wire.Envelope{ID: [16]byte{1}})
	waitFor(t, func() bool { return rowCount(t, e, "envelopes") == 2 })
	ws.ws.Close()

	again := e.connect(bob).drain()
	if len(again) != 2 || again[0].ID != first[1].ID || again[1].ID != first[3].ID {
		t.Fatalf("redelivered %v, want envelopes 1 and 3 with their ids", again)
	}
}

func TestDeviceListChecked(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)

	r := e.send(alice, bob.Account, nil, "", msg{Device: 2, RegID: 1234, Type: 1, Content: []byte("x")})
	if r.Status != 409 || r.errCode() != "mismatched_devices" ||
		fmt.Sprint(r.detail("missing_devices")) != "[1]" || fmt.Sprint(r.detail("extra_devices")) != "[2]" {
		t.Errorf("wrong device: %d %s", r.Status, r.Raw)
	}
	r = e.send(alice, bob.Account, nil, "", msg{Device: 1, RegID: 4321, Type: 1, Content: []byte("x")})
	if r.Status != 410 || r.errCode() != "stale_devices" || fmt.Sprint(r.detail("stale_devices")) != "[1]" {
		t.Errorf("stale registration id: %d %s", r.Status, r.Raw)
	}
	if n := rowCount(t, e, "envelopes"); n != 0 {
		t.Errorf("refused sends stored %d envelopes", n)
	}
	// Bob re-registers (a reinstalled app gets a new registration id).
	d := newDevice(t)
	reg := d.registration(t, e.verified(bobNumber), 0)
	reg["registration_id"] = 777
	if r := e.call("POST", "/v1/accounts", nil, reg, true); r.Status != 200 {
		t.Fatalf("re-register: %d %s", r.Status, r.Raw)
	}
	if r := e.send(alice, bob.Account, nil, "", text("old session")); r.Status != 410 {
		t.Errorf("send to the reinstalled device with its old registration id: %d", r.Status)
	}
	if r := e.send(alice, bob.Account, nil, "", msg{Device: 1, RegID: 777, Type: 3, Content: []byte("new session")}); r.Status != 200 {
		t.Errorf("send with the new registration id: %d %s", r.Status, r.Raw)
	}
}

func TestIdempotentRetry(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	first := e.send(alice, bob.Account, nil, "retry-1", text("once"))
	second := e.send(alice, bob.Account, nil, "retry-1", text("once"))
	if first.Status != 200 || second.Status != 200 || first.Header.Get("Idempotent-Replayed") != "" ||
		second.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(first.Raw, second.Raw) {
		t.Fatalf("first %d %s %v, retry %d %s %v", first.Status, first.Raw, first.Header, second.Status, second.Raw, second.Header)
	}
	if r := e.send(alice, bob.Account, nil, "retry-1", text("something else")); r.Status != 422 || r.errCode() != "idempotency_key_reused" {
		t.Errorf("key reused for another message: %d %s", r.Status, r.Raw)
	}
	for _, bad := range []string{strings.Repeat("k", 65), "with space", "tab\there"} {
		if r := e.send(alice, bob.Account, nil, bad, text("x")); r.Status != 422 {
			t.Errorf("key %q: %d", bad, r.Status)
		}
	}
	if got := e.connect(bob).drain(); len(got) != 1 || string(got[0].Content) != "once" {
		t.Errorf("Bob received %d envelopes, want exactly 1", len(got))
	}
}

func TestOnlineOnly(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	typing := map[string]any{"online": true}
	if r := e.send(alice, bob.Account, typing, "", text("typing while offline")); r.Status != 200 {
		t.Fatalf("online send: %d %s", r.Status, r.Raw)
	}
	if n := rowCount(t, e, "envelopes"); n != 0 {
		t.Fatalf("online-only envelope stored")
	}
	ws := e.connect(bob)
	if q := ws.drain(); len(q) != 0 {
		t.Fatalf("offline online-only envelope delivered later")
	}
	e.send(alice, bob.Account, typing, "", text("typing"))
	got := ws.envelope()
	if string(got.Content) != "typing" || !got.Online {
		t.Errorf("online envelope = %+v", got)
	}
	ws.ack(got) // harmless
	if r := e.send(alice, bob.Account, typing, "", msg{Device: 2, RegID: 1, Type: 1, Content: []byte("x")}); r.Status != 409 {
		t.Errorf("online send to a wrong device list: %d", r.Status)
	}
}

func TestExpiry(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	e := newEnv(t, func(c *envConfig) {
		c.now = func() time.Time { return time.UnixMilli(clock.Load()) }
		c.relay.Retention = time.Hour
	})
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	e.send(alice, bob.Account, map[string]any{"expires_in": 60}, "", text("disappears in a minute"))
	e.send(alice, bob.Account, map[string]any{"expires_in": 7200}, "", text("capped at the retention"))
	e.send(alice, bob.Account, nil, "", text("kept for the retention"))
	rows, _ := e.db.DumpTable(context.Background(), "envelopes")
	for _, r := range rows {
		if exp, srv := r["expires_at"].(int64), r["server_ts"].(int64); exp-srv > time.Hour.Milliseconds() {
			t.Errorf("an envelope outlives the retention: expires %d ms after it was stored", exp-srv)
		}
	}
	clock.Add((2 * time.Minute).Milliseconds())
	got := e.connect(bob).drain()
	if len(got) != 2 || string(got[0].Content) != "capped at the retention" {
		t.Fatalf("after the expiry: %d envelopes delivered; want the two unexpired", len(got))
	}
	if n, err := e.relay.PurgeExpired(context.Background()); n != 1 || err != nil {
		t.Errorf("purge = %d, %v; want 1", n, err)
	}
	clock.Add((2 * time.Hour).Milliseconds())
	if n, err := e.relay.PurgeExpired(context.Background()); n != 2 || err != nil {
		t.Errorf("purge after the retention = %d, %v; want 2 (undelivered and unacknowledged alike)", n, err)
	}
}

func TestQueueFull(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.QueueMaxEnvelopes = 2 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	e.send(alice, bob.Account, nil, "", text("1"))
	e.send(alice, bob.Account, nil, "", text("2"))
	r := e.send(alice, bob.Account, nil, "", text("3"))
	if r.Status != 429 || r.errCode() != "queue_full" || r.Header.Get("Retry-After") == "" || fmt.Sprint(r.detail("devices")) != "[1]" {
		t.Fatalf("third envelope: %d %s", r.Status, r.Raw)
	}
	ws := e.connect(bob)
	ws.ack(ws.drain()...)
	waitFor(t, func() bool { return rowCount(t, e, "envelopes") == 0 })
	if r := e.send(alice, bob.Account, nil, "", text("3")); r.Status != 200 {
		t.Errorf("after draining: %d", r.Status)
	}
}

// TestFullDeviceIsSkipped: a device without room is skipped and named in
// the 200 answer; the recipient's other devices, and other senders, still
// get their messages.
func TestFullDeviceIsSkipped(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.QueueMaxEnvelopes, c.relay.QueueSenderMaxEnvelopes = 3, 2 })
	_, alice := e.register(aliceNumber, 0)
	bobDev, bob := e.register(bobNumber, 1)
	_, carol := e.register(carolNumber, 0)
	body, _ := linkBody(t, bobDev, bob.Account, e.linkCode(bob).Body["code"].(string))
	if r := e.call("POST", "/v1/devices/link", nil, body, true); r.Status != 200 {
		t.Fatalf("link: %d %s", r.Status, r.Raw)
	}
	both := func(s string) []msg {
		return []msg{text(s), {Device: 2, RegID: 4321, Type: 3, Content: []byte(s)}}
	}
	for i := range 2 {
		if r := e.send(alice, bob.Account, nil, "", both(fmt.Sprint("alice ", i))...); r.Status != 200 || r.Body["skipped_devices"] != nil {
			t.Fatalf("alice's send %d: %d %s", i, r.Status, r.Raw)
		}
	}
	ws := e.connect(bob) // device 1 comes online; device 2 stays offline
	ws.ack(ws.drain()...)
	waitFor(t, func() bool { return rowCount(t, e, "envelopes") == 2 }) // device 2's
	skipped := func(r response) string {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("send: %d %s", r.Status, r.Raw)
		}
		return fmt.Sprint(r.Body["skipped_devices"])
	}
	want := fmt.Sprintf("[map[account_id:%s device_id:2 reason:sender_share_full]]", bob.Account)
	if got := skipped(e.send(alice, bob.Account, nil, "", both("alice 2")...)); got != want {
		t.Errorf("past alice's share: skipped %s, want %s", got, want)
	}
	if got := skipped(e.send(carol, bob.Account, nil, "", both("carol 0")...)); got != "<nil>" {
		t.Errorf("carol, within her share: skipped %s", got)
	}
	want = fmt.Sprintf("[map[account_id:%s device_id:2 reason:queue_full]]", bob.Account)
	if got := skipped(e.send(carol, bob.Account, nil, "", both("carol 1")...)); got != want {
		t.Errorf("device 2 full: skipped %s, want %s", got, want)
	}
	for _, want := range []string{"alice 2", "carol 0", "carol 1"} {
		if got := ws.envelope(); string(got.Content) != want {
			t.Errorf("device 1 got %q, want %q: a full sibling must not block it", got.Content, want)
		}
	}
}

func TestSendRateLimited(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.SendBurst, c.relay.SendRate = 3, 0.01 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	for range 3 {
		if r := e.send(alice, bob.Account, nil, "", text("x")); r.Status != 200 {
			t.Fatalf("within the burst: %d", r.Status)
		}
	}
	r := e.send(alice, bob.Account, nil, "", text("x"))
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Errorf("over the rate: %d %v", r.Status, r.Header)
	}
	if r := e.send(bob, alice.Account, nil, "", text("x")); r.Status != 200 {
		t.Errorf("another sender is limited too: %d", r.Status)
	}
}

func TestWindowOfUnacknowledged(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.Window = 3 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	for i := range 5 {
		e.send(alice, bob.Account, nil, "", text(fmt.Sprint(i)))
	}
	ws := e.connect(bob)
	for range 3 {
		ws.envelope()
	}
	if f, err := ws.next(300 * time.Millisecond); err == nil {
		t.Fatalf("relay sent %+v beyond the window", f)
	}
	ws = e.connect(bob) // the timed-out read broke that socket; start over
	var got []*wire.Envelope
	for range 3 {
		got = append(got, ws.envelope())
	}
	ws.ack(got[0], got[1])
	rest := []*wire.Envelope{ws.envelope(), ws.envelope()}
	if string(rest[0].Content) != "3" || string(rest[1].Content) != "4" {
		t.Errorf("after acks: %q, %q; want 3, 4", rest[0].Content, rest[1].Content)
	}
	// The window is full again; queue_empty follows the acks.
	ws.ack(append(rest, got[2])...)
	if f, err := ws.next(5 * time.Second); err != nil || f.Type != wire.FrameQueueEmpty {
		t.Errorf("after the last acks: %+v, %v; want queue_empty", f, err)
	}
}

func TestOneConnectionPerDevice(t *testing.T) {
	e := newEnv(t)
	_, bob := e.register(bobNumber, 0)
	_, alice := e.register(aliceNumber, 0)
	old := e.connect(bob)
	old.drain()
	fresh := e.connect(bob)
	fresh.drain()
	if code := old.closed(); code != wire.CloseReplaced {
		t.Errorf("old connection closed with %d, want %d", code, wire.CloseReplaced)
	}
	e.send(alice, bob.Account, nil, "", text("to the new one"))
	if got := fresh.envelope(); string(got.Content) != "to the new one" {
		t.Errorf("new connection got %+v", got)
	}
	waitFor(t, func() bool { return e.relay.Connections() == 1 })
}

func TestRemovedDevicesAreDisconnected(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	ws := e.connect(bob)
	ws.drain()
	// Re-registering the number replaces the device's credential.
	if r := e.call("POST", "/v1/accounts", nil, newDevice(t).registration(t, e.verified(bobNumber), 0), true); r.Status != 200 {
		t.Fatalf("re-register: %d", r.Status)
	}
	if code := ws.closed(); code != wire.CloseDeviceRemoved {
		t.Errorf("re-registration closed the old socket with %d, want %d", code, wire.CloseDeviceRemoved)
	}
	wa := e.connect(alice)
	wa.drain()
	if r := e.call("DELETE", "/v1/accounts/me", alice, nil, true); r.Status != 204 {
		t.Fatalf("delete account: %d", r.Status)
	}
	if code := wa.closed(); code != wire.CloseDeviceRemoved {
		t.Errorf("account deletion closed the socket with %d, want %d", code, wire.CloseDeviceRemoved)
	}
	if _, resp, err := e.dial(alice); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Errorf("deleted account connected again: %v", err)
	}
}

func TestHostileFrames(t *testing.T) {
	e := newEnv(t)
	_, bob := e.register(bobNumber, 0)
	for _, c := range []struct {
		name  string
		typ   int
		frame []byte
		code  int
	}{
		{"binary", websocket.BinaryMessage, []byte{1, 2, 3}, websocket.CloseUnsupportedData},
		{"not JSON", websocket.TextMessage, []byte("ack please"), websocket.ClosePolicyViolation},
		{"unknown type", websocket.TextMessage, []byte(`{"type":"send","ids":["00000000-0000-4000-8000-000000000000"]}`), websocket.ClosePolicyViolation},
		{"unknown member", websocket.TextMessage, []byte(`{"type":"ack","ids":["00000000-0000-4000-8000-000000000000"],"all":true}`), websocket.ClosePolicyViolation},
		{"bad id", websocket.TextMessage, []byte(`{"type":"ack","ids":["nope"]}`), websocket.ClosePolicyViolation},
		{"no ids", websocket.TextMessage, []byte(`{"type":"ack","ids":[]}`), websocket.ClosePolicyViolation},
		{"too many ids", websocket.TextMessage, []byte(`{"type":"ack","ids":[` + strings.TrimSuffix(strings.Repeat(`"00000000-0000-4000-8000-000000000000",`, 1001), ",") + `]}`), websocket.ClosePolicyViolation},
		{"oversized", websocket.TextMessage, bytes.Repeat([]byte("x"), wire.MaxClientFrame+1), websocket.CloseMessageTooBig},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws := e.connect(bob)
			ws.t = t
			ws.drain()
			if err := ws.ws.WriteMessage(c.typ, c.frame); err != nil {
				t.Fatal(err)
			}
			if code := ws.closed(); code != c.code {
				t.Errorf("closed with %d, want %d", code, c.code)
			}
		})
	}
}

func TestSlowReaderIsDisconnected(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.relay.WriteTimeout = 300 * time.Millisecond
		c.relay.Window = 1000
	})
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	_, carol := e.register(carolNumber, 0)
	stuck := e.connect(bob) // never reads again after this
	stuck.drain()
	wc := e.connect(carol)
	wc.drain()
	big := msg{Device: 1, RegID: 1234, Type: 3, Content: make([]byte, relay.MaxContentBytes)}
	for i := 0; e.relay.Connections() == 2; i++ {
		if i == 400 {
			t.Fatal("400 envelopes of 96 KiB did not fill a stuck reader's socket")
		}
		if r := e.send(alice, bob.Account, nil, "", big); r.Status != 200 {
			t.Fatalf("send %d: %d", i, r.Status)
		}
		if i%20 == 19 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Carol is unaffected.
	e.send(alice, carol.Account, nil, "", text("still here"))
	if got := wc.envelope(); string(got.Content) != "still here" {
		t.Errorf("Carol got %+v", got)
	}
	// Bob's envelopes are all still queued for his next connection.
	if n := rowCount(t, e, "envelopes"); n < 10 {
		t.Errorf("only %d envelopes queued after the disconnect", n)
	}
}

func rowCount(t testing.TB, e *env, table string) int {
	rows, err := e.db.DumpTable(context.Background(), table)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeviceRemovedElsewhereIsDisconnected: a device deleted behind the
// relay's back (parleyd admin, another process) loses its socket at the
// next device check, without any disconnect event.
func TestDeviceRemovedElsewhereIsDisconnected(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.relay.PingInterval, c.relay.DeviceCheckInterval = 100*time.Millisecond, 100*time.Millisecond
	})
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	wa, wb := e.connect(alice), e.connect(bob)
	wa.drain()
	wb.drain()
	id, _ := uuid.Parse(bob.Account)
	if err := e.db.DeleteAccount(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if code := wb.closed(); code != wire.CloseDeviceRemoved {
		t.Errorf("the removed device's socket closed with %d, want %d", code, wire.CloseDeviceRemoved)
	}
	// Alice's device still exists: her socket stays.
	wa.ws.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	if _, _, err := wa.ws.ReadMessage(); !strings.Contains(fmt.Sprint(err), "timeout") {
		t.Errorf("a live device's socket ended: %v", err)
	}
}
