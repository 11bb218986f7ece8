package api_test

import (
	"encoding/base64"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/wire"
)

// request sends a request frame on s.
func (s *socket) request(id uint64, verb, path string, headers map[string]string, body any) {
	s.t.Helper()
	raw, err := stdjson.Marshal(body)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.ws.WriteJSON(wire.Frame{Type: wire.FrameRequest, ID: id, Verb: verb, Path: path, Headers: headers, Body: raw}); err != nil {
		s.t.Fatal(err)
	}
}

// response reads frames until a response arrives (envelopes on the way
// are returned too).
func (s *socket) response() (wire.Frame, map[string]any) {
	s.t.Helper()
	for {
		f, err := s.next(5 * time.Second)
		if err != nil {
			s.t.Fatalf("waiting for a response: %v", err)
		}
		if f.Type != wire.FrameResponse {
			continue
		}
		var body map[string]any
		if err := stdjson.Unmarshal(f.Body, &body); err != nil {
			s.t.Fatalf("response body %q: %v", f.Body, err)
		}
		return f, body
	}
}

// wsSend is a send request's body: content for one device.
func wsSend(content string, device, regID int) stdjson.RawMessage {
	return stdjson.RawMessage(sendBody(device, regID, base64.StdEncoding.EncodeToString([]byte(content))))
}

// Sends over the authenticated WebSocket are answered as over HTTP, by id,
// and reach the recipient; pipelined requests are all answered.
func TestSendOverWebSocket(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	wa, wb := e.connect(alice), e.connect(bob)
	wa.drain()
	wb.drain()

	wa.request(7, "PUT", "/v1/messages/"+bob.Account, nil, wsSend("over the socket", 1, 1234))
	f, body := wa.response()
	if f.ID != 7 || f.Status != 200 || body["server_timestamp"] == nil {
		t.Fatalf("response = %+v %v", f, body)
	}
	env := wb.envelope()
	if string(env.Content) != "over the socket" || env.SourceAccount.String() != alice.Account || env.SourceDevice != 1 {
		t.Errorf("envelope = %+v", env)
	}
	wb.ack(env)

	// Idempotency keys work as over HTTP.
	for i := range 2 {
		wa.request(uint64(10+i), "PUT", "/v1/messages/"+bob.Account, map[string]string{"Idempotency-Key": "k1"}, wsSend("once", 1, 1234))
		f, _ := wa.response()
		if f.Status != 200 || (i == 1) != (f.Headers["Idempotent-Replayed"] == "true") {
			t.Errorf("send %d with a key: %+v", i, f)
		}
	}
	wb.ack(wb.envelope())

	// Pipelined: 50 requests before reading any answer.
	for i := range 50 {
		wa.request(uint64(100+i), "PUT", "/v1/messages/"+bob.Account, nil, wsSend(fmt.Sprint("pipelined ", i), 1, 1234))
	}
	answered := map[uint64]bool{}
	for range 50 {
		f, _ := wa.response()
		if f.Status != 200 || f.ID < 100 || f.ID >= 150 || answered[f.ID] {
			t.Fatalf("pipelined response %+v", f)
		}
		answered[f.ID] = true
	}
	got := map[string]bool{}
	for range 50 {
		e := wb.envelope()
		got[string(e.Content)] = true
		wb.ack(e)
	}
	if len(got) != 50 {
		t.Errorf("Bob received %d distinct of 50", len(got))
	}
	if wb.quiet(200 * time.Millisecond) {
		return
	}
	t.Error("Bob received more than was sent")
}

// quiet reports whether nothing arrives within d.
func (s *socket) quiet(d time.Duration) bool {
	_, err := s.next(d)
	if err == nil {
		return false
	}
	if ne, ok := err.(interface{ Timeout() bool }); !ok || !ne.Timeout() {
		s.t.Fatalf("socket failed: %v", err)
	}
	return true
}

// Refused requests are answered with the same status and error body as over
// HTTP, and the connection stays usable.
func TestWebSocketRequestErrors(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.SendBurst, c.relay.SendRate = 5, 0.01 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	wa := e.connect(alice)
	wa.drain()
	for i, c := range []struct {
		name    string
		verb    string
		path    string
		headers map[string]string
		body    any
		status  int
		code    string
	}{
		{"other endpoint", "GET", "/v1/accounts/me", nil, map[string]any{}, 404, "not_found"},
		{"path below an account", "PUT", "/v1/messages/" + bob.Account + "/x", nil, wsSend("x", 1, 1234), 404, "not_found"},
		{"bad account", "PUT", "/v1/messages/nope", nil, wsSend("x", 1, 1234), 400, "invalid_account_id"},
		{"no such account", "PUT", "/v1/messages/00000000-0000-4000-8000-000000000000", nil, wsSend("x", 1, 1234), 404, "account_not_found"},
		{"other header", "PUT", "/v1/messages/" + bob.Account, map[string]string{"Authorization": "Basic eDp5"}, wsSend("x", 1, 1234), 400, "invalid_request"},
		{"not an object", "PUT", "/v1/messages/" + bob.Account, nil, []int{1}, 400, "invalid_json"},
		{"unknown member", "PUT", "/v1/messages/" + bob.Account, nil, map[string]any{"timestamp": 1, "messages": []any{}, "x": 1}, 400, "invalid_json"},
		{"wrong device", "PUT", "/v1/messages/" + bob.Account, nil, wsSend("x", 2, 1234), 409, "mismatched_devices"},
		{"empty key", "PUT", "/v1/messages/" + bob.Account, map[string]string{"Idempotency-Key": ""}, wsSend("x", 1, 1234), 422, "invalid_message"},
	} {
		wa.request(uint64(i+1), c.verb, c.path, c.headers, c.body)
		f, body := wa.response()
		detail, _ := body["error"].(map[string]any)
		if f.ID != uint64(i+1) || f.Status != c.status || detail["code"] != c.code {
			t.Errorf("%s: %d %v, want %d %s", c.name, f.Status, body, c.status, c.code)
		}
	}
	// The sender's rate limit applies: 429 with Retry-After.
	var limited wire.Frame
	for i := range 10 {
		wa.request(uint64(100+i), "PUT", "/v1/messages/"+bob.Account, nil, wsSend("x", 1, 1234))
		if f, _ := wa.response(); f.Status == 429 {
			limited = f
			break
		}
	}
	if limited.Status != 429 || limited.Headers["Retry-After"] == "" {
		t.Errorf("over the send rate: %+v", limited)
	}
}

// Malformed request frames close the connection like any malformed frame.
func TestHostileRequestFrames(t *testing.T) {
	e := newEnv(t)
	_, bob := e.register(bobNumber, 0)
	for _, c := range []struct {
		name  string
		frame string
	}{
		{"no id", `{"type":"request","verb":"PUT","path":"/v1/messages","body":{}}`},
		{"no verb", `{"type":"request","id":1,"path":"/v1/messages","body":{}}`},
		{"no path", `{"type":"request","id":1,"verb":"PUT","body":{}}`},
		{"a response", `{"type":"response","id":1,"status":200,"body":{}}`},
		{"request with ids", `{"type":"request","id":1,"verb":"PUT","path":"/v1/messages","ids":["00000000-0000-4000-8000-000000000000"]}`},
		{"ack with a body", `{"type":"ack","ids":["00000000-0000-4000-8000-000000000000"],"body":{}}`},
		{"negative id", `{"type":"request","id":-1,"verb":"PUT","path":"/v1/messages","body":{}}`},
		{"body not JSON", `{"type":"request","id":1,"verb":"PUT","path":"/v1/messages","body":nope}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws := e.connect(bob)
			ws.t = t
			ws.drain()
			if err := ws.ws.WriteMessage(websocket.TextMessage, []byte(c.frame)); err != nil {
				t.Fatal(err)
			}
			if code := ws.closed(); code != websocket.ClosePolicyViolation {
				t.Errorf("closed with %d, want %d", code, websocket.ClosePolicyViolation)
			}
		})
	}
}

// FuzzRequestFrames sends arbitrary text frames on an authenticated
// socket: the relay answers a response with a status below 500 (and an
// error code from 400 on), closes with a policy code, or stays silent (an
// ack); it never panics or answers 5xx.
func FuzzRequestFrames(f *testing.F) {
	// Malformed frames close the socket; the fuzzer reconnects far more
	// often than the relay allows a device by default.
	shared := newEnv(f, func(c *envConfig) { c.relay.ReconnectBurst, c.relay.ReconnectInterval = 1<<30, time.Nanosecond })
	_, alice := shared.register(aliceNumber, 0)
	_, bob := shared.register(bobNumber, 0)
	send := `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="}]}`
	for _, s := range []string{
		`{"type":"request","id":1,"verb":"PUT","path":"/v1/messages/` + bob.Account + `","body":` + send + `}`,
		`{"type":"request","id":2,"verb":"PUT","path":"/v1/messages","headers":{"Idempotency-Key":"k"},"body":{"timestamp":1,"type":1,"content":"aGk=","recipients":[]}}`,
		`{"type":"request","id":3,"verb":"GET","path":"/v1/messages/` + bob.Account + `","body":{}}`,
		`{"type":"ack","ids":["00000000-0000-4000-8000-000000000000"]}`,
		`{"type":"request","id":4,"verb":"PUT","path":"/v1/messages/` + bob.Account + `","headers":{"X":"y"},"body":null}`,
	} {
		f.Add([]byte(s))
	}
	var ws *socket
	f.Fuzz(func(t *testing.T, frame []byte) {
		e := *shared
		e.t = t
		if ws == nil {
			ws = e.connect(alice)
			ws.drain()
		}
		ws.t = t
		if err := ws.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			ws = nil
			return
		}
		for {
			got, err := ws.next(time.Second)
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				if ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseMessageTooBig && ce.Code != websocket.CloseUnsupportedData {
					t.Fatalf("frame %q: closed with %d", frame, ce.Code)
				}
				ws = nil
				return
			case err != nil:
				ws.ws.Close() // silent (an ack): start afresh
				ws = nil
				return
			case got.Type != wire.FrameResponse:
				continue
			case got.Status >= 500:
				t.Fatalf("frame %q: answered %d %s", frame, got.Status, got.Body)
			case got.Status >= 400 && !strings.Contains(string(got.Body), `"code"`):
				t.Fatalf("frame %q: %d without an error code: %s", frame, got.Status, got.Body)
			}
			return
		}
	})
}
