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
