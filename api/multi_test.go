package api_test

import (
	"net/http"
	"testing"
)

func multiBody(content string, recipients ...map[string]any) map[string]any {
	return map[string]any{"timestamp": 7, "type": 4, "content": b64([]byte(content)), "recipients": recipients}
}

func to(c *creds, devices ...[2]int) map[string]any {
	var ds []map[string]any
	for _, d := range devices {
		ds = append(ds, map[string]any{"device_id": d[0], "registration_id": d[1]})
	}
	return map[string]any{"account_id": c.Account, "devices": ds}
}

// TestMultiRecipientSend: one request stores the shared ciphertext for
// every addressed device; device-list problems of all recipients come back
// together and store nothing.
func TestMultiRecipientSend(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	_, carol := e.register(carolNumber, 0)
	dev := [2]int{1, 1234} // every test device registers with id 1234

	if r := e.call("PUT", "/v1/messages", alice, multiBody("to the group", to(bob, dev), to(carol, dev)), true); r.Status != 200 {
		t.Fatalf("multi send: %d %s", r.Status, r.Raw)
	}
	for _, c := range []*creds{bob, carol} {
		s := e.connect(c)
		envs := s.drain()
		if len(envs) != 1 || string(envs[0].Content) != "to the group" || envs[0].SourceAccount.String() != alice.Account || envs[0].Type != 4 {
			t.Fatalf("%s got %+v", c.Account, envs)
		}
		s.ack(envs...)
	}
	waitFor(t, func() bool { return rowCount(t, e, "envelopes") == 0 })

	expect := func(name string, r response, status int, code string) {
		t.Helper()
		if r.Status != status || r.errCode() != code {
			t.Errorf("%s: got %d %s, want %d %s", name, r.Status, r.Raw, status, code)
		}
	}
	// Carol's list is wrong and Bob's registration id is stale: 409 names
	// Carol's problem (and Bob's), and nothing is stored for anyone.
	r := e.call("PUT", "/v1/messages", alice, multiBody("x", to(bob, [2]int{1, 99}), to(carol, [2]int{2, 1234})), true)
	expect("mismatched", r, 409, "mismatched_devices")
	mm, _ := r.detail("mismatched").([]any)
	st, _ := r.detail("stale").([]any)
	if len(mm) != 1 || mm[0].(map[string]any)["account_id"] != carol.Account || len(st) != 1 || st[0].(map[string]any)["account_id"] != bob.Account {
		t.Errorf("details: %s", r.Raw)
	}
	r = e.call("PUT", "/v1/messages", alice, multiBody("x", to(bob, [2]int{1, 99}), to(carol, dev)), true)
	expect("stale only", r, 410, "stale_devices")
	if n := rowCount(t, e, "envelopes"); n != 0 {
		t.Errorf("refused sends stored %d envelopes", n)
	}
	expect("unknown account", e.call("PUT", "/v1/messages", alice, multiBody("x", to(bob, dev),
		map[string]any{"account_id": "00000000-0000-4000-8000-000000000000", "devices": []map[string]any{{"device_id": 1, "registration_id": 1}}}), true),
		404, "account_not_found")
	expect("recipient twice", e.call("PUT", "/v1/messages", alice, multiBody("x", to(bob, dev), to(bob, dev)), true), 422, "invalid_message")
	expect("to one's own device", e.call("PUT", "/v1/messages", alice, multiBody("x", to(alice, dev)), true), 422, "invalid_message")
	expect("no credentials", e.call("PUT", "/v1/messages", nil, multiBody("x", to(bob, dev)), true), 401, "unauthorized")
	expect("no recipients", e.call("PUT", "/v1/messages", alice, map[string]any{"timestamp": 7, "type": 4, "content": b64([]byte("x")), "recipients": []any{}}, false), 422, "invalid_message")
	expect("account id not a UUID", e.call("PUT", "/v1/messages", alice, multiBody("x", map[string]any{"account_id": "../x", "devices": []any{}}), false), 400, "invalid_account_id")
	if n := rowCount(t, e, "envelopes"); n != 0 {
		t.Errorf("refused sends stored %d envelopes", n)
	}

	// Idempotent retry: the second identical request stores nothing new.
	h := http.Header{"Idempotency-Key": {"group-1"}}
	for i := range 2 {
		r := e.callHeader("PUT", "/v1/messages", alice, multiBody("once", to(bob, dev), to(carol, dev)), h, true)
		if r.Status != 200 || (i == 1) != (r.Header.Get("Idempotent-Replayed") == "true") {
			t.Fatalf("attempt %d: %d %v", i, r.Status, r.Header)
		}
	}
	if n := rowCount(t, e, "envelopes"); n != 2 {
		t.Errorf("idempotent multi send stored %d envelopes, want 2", n)
	}
}

// TestMultiSendChargedPerDevice: a multi-recipient send costs its
// ciphertext once per addressed device against the sender's byte budget.
func TestMultiSendChargedPerDevice(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.StoreBytesBurst, c.relay.StoreBytesPerHour = 300<<10, 1 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	_, carol := e.register(carolNumber, 0)
	dev := [2]int{1, 1234}
	big := string(make([]byte, 96<<10))
	if r := e.call("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), true); r.Status != 200 {
		t.Fatalf("first 192 KiB: %d %s", r.Status, r.Raw)
	}
	r := e.call("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), true)
	if r.Status != 429 || r.errCode() != "rate_limited" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second 192 KiB of a 300 KiB budget: %d %s", r.Status, r.Raw)
	}
	if n := rowCount(t, e, "envelopes"); n != 2 {
		t.Errorf("%d envelopes stored, want 2", n)
	}
	// A request larger than the whole budget can never pass: 422.
	e2 := newEnv(t, func(c *envConfig) { c.relay.StoreBytesBurst, c.relay.StoreBytesPerHour = 100<<10, 1<<20 })
	_, alice = e2.register(aliceNumber, 0)
	_, bob = e2.register(bobNumber, 0)
	_, carol = e2.register(carolNumber, 0)
	if r := e2.call("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), true); r.Status != 422 || r.errCode() != "invalid_message" {
		t.Errorf("192 KiB against a 100 KiB burst: %d %s", r.Status, r.Raw)
	}
}

// TestRetryOverBudgetReplays: a retry (same idempotency key and body) of a
// send that was stored gets its first answer even when the sender's budget
// is used up meanwhile, instead of a 429 that would make the client send
// the message again as a new one.
func TestRetryOverBudgetReplays(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.relay.StoreBytesBurst, c.relay.StoreBytesPerHour = 300<<10, 1 })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	_, carol := e.register(carolNumber, 0)
	dev := [2]int{1, 1234}
	big := string(make([]byte, 96<<10))
	h := http.Header{"Idempotency-Key": {"retry-me"}}
	first := e.callHeader("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), h, true)
	if first.Status != 200 {
		t.Fatalf("first send: %d %s", first.Status, first.Raw)
	}
	if r := e.call("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), true); r.Status != 429 {
		t.Fatalf("a new send over the budget: %d %s", r.Status, r.Raw)
	}
	again := e.callHeader("PUT", "/v1/messages", alice, multiBody(big, to(bob, dev), to(carol, dev)), h, true)
	if again.Status != 200 || string(again.Raw) != string(first.Raw) {
		t.Fatalf("retry over the budget: %d %s, want the first answer %s", again.Status, again.Raw, first.Raw)
	}
	if n := rowCount(t, e, "envelopes"); n != 2 {
		t.Errorf("%d envelopes stored, want 2", n)
	}
}
