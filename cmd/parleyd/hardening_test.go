package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// noPublicCaps lifts the caps on unauthenticated requests, for tests that
// play an attacker with many addresses from 127.0.0.1 alone. (Environment,
// not flags, so the same test runs against a parleyd that predates them.)
var noPublicCaps = []string{"PARLEY_PUBLIC_IP_BURST=1000000", "PARLEY_PUBLIC_IP_RATE=1000000",
	"PARLEY_PUBLIC_BURST=1000000", "PARLEY_PUBLIC_RATE=1000000"}

// post sends body as JSON and returns the status, headers and decoded body.
func post(t *testing.T, c *http.Client, url string, body []byte) (int, http.Header, map[string]any) {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, resp.Header, out
}

func verifiedSession(t *testing.T, p *proc, number string) string {
	t.Helper()
	st, body := p.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": number})
	if st != 200 {
		t.Fatalf("start verification: %d %v", st, body)
	}
	sid := body["session_id"].(string)
	if st, body = p.do("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": sid, "code": "123456"}); st != 200 {
		t.Fatalf("check code: %d %v", st, body)
	}
	return sid
}

// Issue 14 row 1. An attacker who controls the victim's number (SIM swap)
// but not the registration-lock PIN sends 150 concurrent wrong tokens over
// 15 verified sessions while another of its accounts keeps the SQLite
// writer busy with large sends, so that every wrong-token count it reads
// is stale. At most LockAttemptsPerDay (10) tokens may be evaluated (each
// is an audit entry), and the right token afterwards must not take the
// account over.
func TestRegistrationLockUnderConcurrency(t *testing.T) {
	dir := t.TempDir()
	p := start(t, append([]string{"PARLEY_TEST_NUMBERS=+15555550100=123456,+15555550101=123456,+15555550102=123456"}, noPublicCaps...),
		"--data-dir", dir, "--send-rate", "100000", "--send-burst", "100000", "--queue-max-bytes", strconv.Itoa(4<<30),
		"--queue-max-envelopes", "1000000")
	victim := registerDevice(t, p, "+15555550100")
	token := make([]byte, 32)
	rand.Read(token)
	if st, body := p.do("PUT", "/v1/accounts/me/registration-lock", victim.user, victim.pass, map[string]any{"token": b64(token)}); st != 204 {
		t.Fatalf("set lock: %d %v", st, body)
	}
	attacker := registerDevice(t, p, "+15555550101")
	accomplice := registerDevice(t, p, "+15555550102")

	const sessions, guesses = 15, 150
	sids := make([]string, sessions)
	for i := range sids {
		sids[i] = verifiedSession(t, p, "+15555550100")
	}
	_, reg := keyMaterial(t)
	bodies := make([][]byte, guesses)
	for i := range bodies {
		wrong := make([]byte, 32)
		rand.Read(wrong)
		reg["session_id"], reg["registration_lock"] = sids[i%sessions], b64(wrong)
		bodies[i], _ = json.Marshal(reg)
	}

	// The writer is kept busy with 96 KiB sends to an accomplice's device.
	stop := make(chan struct{})
	var busy sync.WaitGroup
	var sent atomic.Int64
	big := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), 96<<10))
	for w := range 4 {
		busy.Add(1)
		go func() {
			defer busy.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b, _ := json.Marshal(map[string]any{"timestamp": time.Now().UnixMilli(), "messages": []any{
					map[string]any{"device_id": 1, "registration_id": 77, "type": 1, "content": big}}})
				req, _ := http.NewRequest("PUT", p.base+"/v1/messages/"+accomplice.account, bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("busy-%d-%d", w, i))
				req.SetBasicAuth(attacker.user, attacker.pass)
				if resp, err := c.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						sent.Add(1)
					}
				}
			}
		}()
	}
	waitCond(t, 30*time.Second, "the writer to be busy", func() bool { return sent.Load() >= 20 })

	var wg sync.WaitGroup
	gate := make(chan struct{})
	statuses := make([]int, guesses)
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: guesses, MaxConnsPerHost: guesses}}
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			statuses[i], _, _ = post(t, c, p.base+"/v1/accounts", bodies[i])
		}()
	}
	close(gate)
	wg.Wait()
	close(stop)
	busy.Wait()
	t.Logf("guess answers: %s; %d busy sends", countStatuses(statuses), sent.Load())
	for _, st := range statuses {
		if st == 200 {
			t.Fatal("a wrong token registered the number")
		}
	}

	evaluated := auditCount(t, dir, "account.registration_lock_failed")
	t.Logf("%d wrong tokens evaluated", evaluated)
	if evaluated > 10 {
		t.Errorf("%d wrong tokens were evaluated in one day; the limit is 10", evaluated)
	}

	// The right token, after the day's limit, does not take the account.
	reg["session_id"], reg["registration_lock"] = verifiedSession(t, p, "+15555550100"), b64(token)
	b, _ := json.Marshal(reg)
	if st, _, body := post(t, http.DefaultClient, p.base+"/v1/accounts", b); st == 200 {
		t.Errorf("the right token after %d evaluated guesses took the account over: %v", evaluated, body)
	} else if evaluated >= 10 && st != 423 {
		t.Errorf("the right token after the limit: %d %v, want 423", st, body)
	}
	if st, _ := p.do("GET", "/v1/accounts/me", victim.user, victim.pass, nil); st != 200 {
		t.Errorf("the victim's device no longer authenticates: %d", st)
	}
}

func countStatuses(sts []int) string {
	n := map[int]int{}
	for _, s := range sts {
		n[s]++
	}
	return fmt.Sprint(n)
}

// auditCount counts the audit log's entries of kind, read with `parleyd
// admin audit export` as an operator would.
func auditCount(t *testing.T, dir, kind string) int {
	t.Helper()
	out, code := adminRun(t, nil, "audit", "export", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("audit export: %d %s", code, out)
	}
	return strings.Count(out, `"kind":"`+kind+`"`)
}

// registrationWithKEMKeys is a well-formed registration body whose keys
// carry n one-time Kyber prekeys, each validly signed: the most signature
// checks one request can ask for (n = 100 → 102).
func registrationWithKEMKeys(t *testing.T, n int) map[string]any {
	id, _ := protocol.GenerateKeyPair(rand.Reader)
	_, reg := keyMaterial(t)
	spk, _ := protocol.GenerateKeyPair(rand.Reader)
	reg["identity_key"] = b64(id.Public.Bytes())
	reg["signed_prekey"] = map[string]any{"key_id": 1, "public_key": b64(spk.Public.Bytes()), "signature": b64(xeddsaSign(id.Private, spk.Public.Bytes()))}
	pq := make([]byte, 1569)
	rand.Read(pq)
	pq[0] = 8
	reg["pq_last_resort_prekey"] = map[string]any{"key_id": 1, "public_key": b64(pq), "signature": b64(xeddsaSign(id.Private, pq))}
	var pqs []any
	for i := range n {
		pqs = append(pqs, map[string]any{"key_id": i + 2, "public_key": b64(pq), "signature": b64(xeddsaSign(id.Private, pq))})
	}
	reg["pq_prekeys"] = pqs
	return reg
}

var sigChecksLine = regexp.MustCompile(`(?m)^parley_registration_signature_checks_total (\S+)$`)

// signatureChecks reads the relay's count of registration signature checks.
func signatureChecks(t *testing.T, p *proc) float64 {
	t.Helper()
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	v := sigChecksLine.FindSubmatch(m)
	if v == nil {
		t.Fatal("the relay does not count registration signature checks (parley_registration_signature_checks_total)")
	}
	f, _ := strconv.ParseFloat(string(v[1]), 64)
	return f
}

// Issue 14 row 11. Bogus registrations with an unknown session are refused
// before any signature is checked (counted by the relay's metric, not
// timed), and one address that keeps sending unauthenticated requests gets
// 429 with the standard JSON error body.
func TestBogusRegistrationsAreCheap(t *testing.T) {
	p := start(t, []string{"PARLEY_TEST_NUMBERS=+15555550100=123456", "PARLEY_PUBLIC_IP_BURST=20", "PARLEY_PUBLIC_IP_RATE=0.001"},
		"--data-dir", t.TempDir())
	c := &http.Client{Timeout: 10 * time.Second}
	reg := registrationWithKEMKeys(t, 100)
	reg["session_id"] = "bogus-session-id-that-was-never-issued"
	bogus, _ := json.Marshal(reg)

	// A bad signature with a bad session: the session is what is refused.
	reg["signed_prekey"].(map[string]any)["signature"] = b64(make([]byte, 64))
	badSig, _ := json.Marshal(reg)
	if st, _, body := post(t, c, p.base+"/v1/accounts", badSig); st != 404 || body["error"].(map[string]any)["code"] != "session_not_found" {
		t.Errorf("bad session and bad signature: %d %v, want 404 session_not_found", st, body)
	}
	for range 10 {
		if st, _, body := post(t, c, p.base+"/v1/accounts", bogus); st != 404 {
			t.Fatalf("bogus registration: %d %v", st, body)
		}
	}
	if n := signatureChecks(t, p); n != 0 {
		t.Errorf("11 registrations with an unknown session cost %v signature checks, want 0", n)
	}
	registerFlow(t, p, "+15555550100", "123456") // 3 requests, 2 signatures
	if n := signatureChecks(t, p); n != 2 {
		t.Errorf("a real registration counted %v signature checks, want 2", n)
	}

	// 14 requests so far; the address's burst is 20.
	for i := 15; ; i++ {
		st, h, body := post(t, c, p.base+"/v1/accounts", bogus)
		if st == 404 && i <= 20 {
			continue
		}
		e, _ := body["error"].(map[string]any)
		details, _ := e["details"].(map[string]any)
		if st != 429 || i != 21 || e["code"] != "rate_limited" || details["retry_after_seconds"] == nil || h.Get("Retry-After") == "" {
			t.Fatalf("request %d from one address: %d %v (Retry-After %q), want the 21st to be 429 rate_limited", i, st, body, h.Get("Retry-After"))
		}
		break
	}
	// The cap covers verification too, before any SMS could be sent.
	if st, body := p.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": "+15555550100"}); st != 429 {
		t.Errorf("verification after the cap: %d %v", st, body)
	}
}

// Issue 14 row 11, device linking: a link request with a bogus code for a
// real account is refused before any of its 102 signatures is checked.
func TestBogusLinksAreCheap(t *testing.T) {
	p := start(t, append([]string{"PARLEY_TEST_NUMBERS=+15555550100=123456"}, noPublicCaps...), "--data-dir", t.TempDir())
	c := &http.Client{Timeout: 10 * time.Second}
	user, _ := registerFlow(t, p, "+15555550100", "123456")
	before := signatureChecks(t, p)
	link := registrationWithKEMKeys(t, 100)
	delete(link, "identity_key")
	delete(link, "session_id")
	link["account_id"] = strings.TrimSuffix(user, ".1")
	link["code"] = "not-a-code-the-account-made"
	body, _ := json.Marshal(link)
	for range 5 {
		st, _, ans := post(t, c, p.base+"/v1/devices/link", body)
		if st != 403 || ans["error"].(map[string]any)["code"] != "invalid_link_code" {
			t.Fatalf("bogus link: %d %v, want 403 invalid_link_code", st, ans)
		}
	}
	if n := signatureChecks(t, p); n != before {
		t.Errorf("5 bogus links cost %v signature checks, want 0", n-before)
	}
}
