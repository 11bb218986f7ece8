package main

// Regression tests for issue 14 ("what an attacker did to a running
// parleyd"): each drives a real parleyd the way the attack did. Settings
// are passed as environment variables where possible, so that a parleyd
// without the fix still starts and the test fails on its behaviour.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/wire"
)

// serveExit runs parleyd serve with args and env and returns its output and
// exit code, failing the test if it is still running (serving) after 15 s.
func serveExit(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"serve", "--metrics-listen", ""}, args...)...)
	cmd.Env = append(cmd.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("parleyd %v started serving instead of refusing:\n%s", args, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("parleyd %v: exit %v\n%s", args, err, out)
	}
	return string(out), ee.ExitCode()
}

// Row 14: `--listen 0.0.0.0:…` with the log sender started plain HTTP with
// codes in the log, silently.
func TestPublicPlainHTTPWithLogSenderRefused(t *testing.T) {
	out, code := serveExit(t, nil, "--listen", "0.0.0.0:0", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(out, "--allow-insecure-listen") || !strings.Contains(out, "--sms-sender log") {
		t.Fatalf("exit %d, want 2 and an error naming --allow-insecure-listen:\n%s", code, out)
	}
	// Explicitly allowed, it serves, and says so in the log.
	p := start(t, []string{"PARLEY_ALLOW_INSECURE_LISTEN=true"}, "--listen", "0.0.0.0:0", "--data-dir", t.TempDir())
	if !strings.Contains(p.logs.String(), `"level":"WARN","msg":"verification codes are written to this log`) {
		t.Errorf("no warning for an insecure listener:\n%s", p.logs)
	}
	p.stop()
}

// Row 14: PARLEY_TWILIO_BASE_URL, meant for tests, was read in production,
// so an environment variable could send the Twilio auth token anywhere.
func TestTwilioBaseURLFromEnvironmentRefused(t *testing.T) {
	var hits atomic.Int32
	collector := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1) // the attacker's host, collecting Basic auth
		w.WriteHeader(500)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go collector.Serve(ln)
	defer collector.Close()
	const sid, token = "AC00000000000000000000000000000003", "0123456789abcdef0123456789abcdef"
	env := []string{"PARLEY_TWILIO_AUTH_TOKEN=" + token, "PARLEY_TWILIO_BASE_URL=http://" + ln.Addr().String()}
	args := []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--sms-sender", "twilio-verify",
		"--twilio-account-sid", sid, "--twilio-verify-service-sid", "VA00000000000000000000000000000003"}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"serve", "--metrics-listen", ""}, args...)...)
	cmd.Env = append(cmd.Environ(), env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// If it serves, ask for a code as the attacker would and see where the
	// token goes.
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := stderr.Read(buf)
		out.Write(buf[:n])
		if m := listenLine.FindStringSubmatch(out.String()); m != nil {
			resp, err := http.Post("http://"+m[2]+"/v1/verification/sessions", "application/json", strings.NewReader(`{"number":"+447700900123"}`))
			if err == nil {
				resp.Body.Close()
			}
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("parleyd served with PARLEY_TWILIO_BASE_URL set; Twilio requests sent to the environment's host: %d\n%s", hits.Load(), out.String())
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out.String(), "PARLEY_TWILIO_BASE_URL") || !strings.Contains(out.String(), "--twilio-base-url") {
		t.Fatalf("exit %v, want 2 and an error naming PARLEY_TWILIO_BASE_URL and --twilio-base-url:\n%s", err, out.String())
	}
	if hits.Load() != 0 {
		t.Fatal("the environment's host was contacted")
	}
}

// Row 14: the 423 answer revealed (in time_remaining_seconds, counting down
// to seven days after the last-seen day) when the victim was last seen.
func TestRegistrationLocked423HasNoLastSeen(t *testing.T) {
	p := start(t, []string{testNumbers}, "--data-dir", t.TempDir())
	victim := registerDevice(t, p, "+15555550100")
	if st, body := p.do("PUT", "/v1/accounts/me/registration-lock", victim.user, victim.pass, map[string]any{"token": b64(make([]byte, 32))}); st != 204 {
		t.Fatalf("set lock: %d %v", st, body)
	}
	// The attacker holds the number (a SIM swap) and tries to register.
	st, body := p.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": "+15555550100"})
	if st != 200 {
		t.Fatalf("start: %d %v", st, body)
	}
	sid := body["session_id"].(string)
	if st, body = p.do("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": sid, "code": "123456"}); st != 200 {
		t.Fatalf("code: %d %v", st, body)
	}
	_, reg := keyMaterial(t)
	reg["session_id"] = sid
	st, body = p.do("POST", "/v1/accounts", "", "", reg)
	if st != 423 {
		t.Fatalf("register over a lock: %d %v", st, body)
	}
	details, _ := body["error"].(map[string]any)["details"].(map[string]any)
	for k := range details {
		if k != "attempts_left" {
			t.Errorf("423 details carry %q (%v): only attempts_left may be there", k, details[k])
		}
	}
	raw, _ := json.Marshal(body)
	for _, leak := range []string{"time_remaining", "last_seen", "lapse"} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("423 body mentions %s: %s", leak, raw)
		}
	}
	p.stop()
}

// closeFrameRate is the close code api/websocket.md documents for a device
// over the frame rate (wire.CloseFrameRate), spelled out so this test also
// builds against a relay without it.
const closeFrameRate = 4003

// Row 14: a device could send WebSocket frames as fast as it liked.
func TestWebSocketFrameFloodClosed(t *testing.T) {
	p := start(t, []string{testNumbers, "PARLEY_WS_FRAME_RATE=20", "PARLEY_WS_FRAME_BURST=100"}, "--data-dir", t.TempDir())
	d := registerDevice(t, p, "+15555550100")
	ws, err := dialSocket(p, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	frame, _ := json.Marshal(wire.Frame{Type: wire.FrameAck, IDs: []uuid.UUID{uuid.New()}})
	// Well over the burst (100) at far over the rate (20/s).
	for i := 0; i < 1000; i++ {
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			break // closed under us
		}
	}
	select {
	case err := <-closed:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != closeFrameRate {
			t.Fatalf("connection ended with %v, want close code %d", err, closeFrameRate)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a device sending 1000 frames at once was not closed")
	}
	waitCond(t, 5*time.Second, "a log line for the closed connection", func() bool {
		return strings.Contains(p.logs.String(), "websocket frame rate exceeded")
	})
	p.stop()
}

// Row 14: a device could reconnect as fast as it liked.
func TestWebSocketReconnectLoopThrottled(t *testing.T) {
	p := start(t, []string{testNumbers, "PARLEY_WS_RECONNECT_BURST=10", "PARLEY_WS_RECONNECT_INTERVAL=6s"}, "--data-dir", t.TempDir())
	d := registerDevice(t, p, "+15555550100")
	var refused *http.Response
	for i := 0; i < 30 && refused == nil; i++ {
		h := http.Header{}
		h.Set("Authorization", "Basic "+b64([]byte(d.user+":"+d.pass)))
		ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.base, "http")+"/v1/websocket", h)
		if err == nil {
			ws.Close()
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		if i+1 != 11 {
			t.Errorf("refused at connection %d, want 11 (burst 10)", i+1)
		}
		refused = resp
	}
	if refused == nil {
		t.Fatal("30 connections in a row were all accepted")
	}
	if refused.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	b, _ := io.ReadAll(refused.Body)
	if !strings.Contains(string(b), `"rate_limited"`) {
		t.Errorf("429 body: %s", b)
	}
	p.stop()
}

// Row 6: PUT /v1/accounts/me/registration-lock had no limit and wrote an
// audit entry per call (34,807 entries in 20 s from one account).
func TestRegistrationLockFloodBoundsAudit(t *testing.T) {
	dir := t.TempDir()
	p := start(t, []string{testNumbers}, "--data-dir", dir)
	d := registerDevice(t, p, "+15555550100")
	const flood = 300
	ok, limited := 0, 0
	for i := 0; i < flood; i++ {
		st, body := p.do("PUT", "/v1/accounts/me/registration-lock", d.user, d.pass, map[string]any{"token": b64(make([]byte, 32))})
		switch st {
		case 204:
			ok++
		case 429:
			if body["error"].(map[string]any)["code"] != "rate_limited" {
				t.Fatalf("429 body: %v", body)
			}
			limited++
		default:
			t.Fatalf("PUT %d: %d %v", i, st, body)
		}
	}
	if ok > 10 || limited != flood-ok {
		t.Fatalf("%d PUTs: %d accepted, %d refused with 429; want at most 10 accepted (burst), the rest 429", flood, ok, limited)
	}
	p.stop() // writes the coalesced count

	out, code := adminRun(t, nil, "audit", "export", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("export: %d %s", code, out)
	}
	entries, events := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Kind    string            `json:"kind"`
			Details map[string]string `json:"details"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("export line %q: %v", l, err)
		}
		if e.Kind != "account.registration_lock_set" {
			continue
		}
		entries++
		events++
		if r := e.Details["repeated"]; r != "" {
			var n int
			fmt.Sscan(r, &n)
			events += n - 1 // the entry stands for n events, not n+1
		}
	}
	if entries > 2 || events != ok {
		t.Fatalf("audit holds %d lock_set entries standing for %d events; want at most 2 entries for the %d accepted PUTs:\n%s", entries, events, ok, out)
	}
	if out, code := adminRun(t, nil, "audit", "verify", "--data-dir", dir); code != 0 {
		t.Fatalf("audit verify: %d %s", code, out)
	}
}

// Row 7: limits were per address, number and 4-digit prefix only, so 100
// source addresses × 40 prefixes sent 1,000 codes in 0.58 s.
func TestSMSPumpingHitsBudgets(t *testing.T) {
	env := []string{"PARLEY_SMS_COUNTRY_HOURLY_BUDGET=20", "PARLEY_SMS_HOURLY_BUDGET=50"}
	p := start(t, env, "--data-dir", t.TempDir(), "--client-ip-header", "X-Forwarded-For")
	countries := []struct{ cc, format string }{
		{"44", "+4477%02d9%05d"}, {"49", "+49151%02d%05d"}, {"33", "+336%02d%05d"}, {"39", "+39347%02d%05d"},
	}
	sent := map[string]int{}
	refused := map[string]int{}
	ip := 0
	for _, c := range countries {
		for prefix := 0; prefix < 40; prefix++ { // 40 prefixes, one number each, from rotating addresses
			ip++
			number := fmt.Sprintf(c.format, prefix, ip)
			req, _ := http.NewRequest("POST", p.base+"/v1/verification/sessions", strings.NewReader(`{"number":"`+number+`"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", ip%100))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				sent[c.cc]++
			case resp.StatusCode == 429 && body.Error.Code == "sms_budget_exhausted" && resp.Header.Get("Retry-After") != "":
				refused[c.cc]++
			default:
				t.Fatalf("%s: %d %+v", c.cc, resp.StatusCode, body)
			}
		}
	}
	total := sent["44"] + sent["49"] + sent["33"] + sent["39"]
	if sent["44"] != 20 || sent["49"] != 20 || total != 50 {
		t.Fatalf("codes sent by country %v (total %d), refused %v; want 20 per country and 50 in all", sent, total, refused)
	}
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`parley_sms_budget_exhausted_total{budget="country",calling_code="44"} 20`,
		`parley_sms_budget_exhausted_total{budget="global",calling_code="39"} 40`,
		`parley_sms_codes_sent_total{calling_code="44"} 20`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(m), "parley_sms"))
		}
	}
	logs := p.logs.String()
	for _, want := range []string{`"level":"ERROR","msg":"SMS budget exhausted`, `"budget":"country","calling_code":"44"`, `"budget":"global"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, grep(logs, "budget"))
		}
	}
	if n := strings.Count(logs, `"budget":"country","calling_code":"44"`); n != 1 {
		t.Errorf("the country budget alert was logged %d times, want once per hour", n)
	}
	p.stop()
}
