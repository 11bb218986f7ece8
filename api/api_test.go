package api_test

import (
	"strconv"
	"strings"
	"testing"
)

func TestRegisterUploadAndFetch(t *testing.T) {
	e := newEnv(t)
	if r := e.call("GET", "/healthz", nil, nil, true); r.Status != 200 {
		t.Fatalf("healthz: %d", r.Status)
	}
	if r := e.call("GET", "/readyz", nil, nil, true); r.Status != 200 {
		t.Fatalf("readyz: %d", r.Status)
	}
	aliceDev, alice := e.register(aliceNumber, 2)
	_, bob := e.register(bobNumber, 0)
	if alice.Device != 1 || alice.Account == bob.Account {
		t.Fatalf("registrations: %+v %+v", alice, bob)
	}

	r := e.call("GET", "/v1/accounts/me", alice, nil, true)
	if r.Status != 200 || r.Body["account_id"] != alice.Account || r.Body["registration_lock"] != false {
		t.Errorf("whoami: %d %s", r.Status, r.Raw)
	}
	r = e.call("GET", "/v1/devices", alice, nil, true)
	if r.Status != 200 || len(r.Body["devices"].([]any)) != 1 {
		t.Errorf("devices: %d %s", r.Status, r.Raw)
	}

	// Bob fetches Alice's bundle twice (claiming both one-time prekeys), then
	// a third time (falling back to the last-resort PQ key).
	for i := 1; i <= 3; i++ {
		r = e.call("GET", "/v1/keys/"+alice.Account+"/*", bob, nil, true)
		if r.Status != 200 {
			t.Fatalf("fetch %d: %d %s", i, r.Status, r.Raw)
		}
		d := r.Body["devices"].([]any)[0].(map[string]any)
		pk, hasPK := d["prekey"].(map[string]any)
		switch {
		case i <= 2 && (!hasPK || pk["key_id"] != float64(i) || d["pq_last_resort"] != false):
			t.Errorf("fetch %d: want one-time prekey %d, got %s", i, i, r.Raw)
		case i == 3 && (hasPK || d["pq_last_resort"] != true):
			t.Errorf("fetch 3: want no one-time prekey and the last-resort key, got %s", r.Raw)
		}
		if r.Body["identity_key"] != b64(aliceDev.identity.Public.Bytes()) {
			t.Error("bundle carries the wrong identity key")
		}
	}
	r = e.call("GET", "/v1/keys/count", alice, nil, true)
	if r.Status != 200 || r.Body["ec"] != 0.0 || r.Body["pq"] != 0.0 || r.Body["low_water"] == nil {
		t.Errorf("count after claims: %d %s", r.Status, r.Raw)
	}

	// Alice tops up; Bob gets the new keys.
	up := map[string]any{"prekeys": aliceDev.preKeys(t, 10, 3), "pq_prekeys": aliceDev.pqPreKeys(10, 3), "signed_prekey": aliceDev.signedPreKey(t, 2)}
	if r = e.call("PUT", "/v1/keys", alice, up, true); r.Status != 204 {
		t.Fatalf("upload: %d %s", r.Status, r.Raw)
	}
	r = e.call("GET", "/v1/keys/count", alice, nil, true)
	if r.Body["ec"] != 3.0 || r.Body["pq"] != 3.0 {
		t.Errorf("count after upload: %s", r.Raw)
	}
	r = e.call("GET", "/v1/keys/"+alice.Account+"/1", bob, nil, true)
	d := r.Body["devices"].([]any)[0].(map[string]any)
	if d["prekey"].(map[string]any)["key_id"] != 10.0 || d["signed_prekey"].(map[string]any)["key_id"] != 2.0 {
		t.Errorf("bundle after top-up: %s", r.Raw)
	}
	// Uploading the same ids again is refused, all or nothing.
	if r = e.call("PUT", "/v1/keys", alice, map[string]any{"prekeys": aliceDev.preKeys(t, 11, 1)}, true); r.Status != 422 || r.errCode() != "duplicate_key_id" {
		t.Errorf("duplicate pooled id: %d %s", r.Status, r.Raw)
	}
}

func TestVerificationByLoggedCode(t *testing.T) {
	e := newEnv(t)
	const number = "+4930901820"
	r := e.call("POST", "/v1/verification/sessions", nil, map[string]any{"number": "+49 30 901820"}, true)
	if r.Status != 200 || r.Body["verified"] != false || r.Body["attempts_left"] != 5.0 || r.Body["next_send_at"] == nil {
		t.Fatalf("start: %d %s", r.Status, r.Raw)
	}
	id := r.Body["session_id"].(string)
	code := e.loggedCode()
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	r = e.call("PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "code": wrong}, true)
	if r.Status != 403 || r.errCode() != "wrong_code" || r.detail("attempts_left") != 4.0 {
		t.Errorf("wrong code: %d %s", r.Status, r.Raw)
	}
	// Resending immediately is refused until next_send_at.
	r = e.call("POST", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "number": number}, true)
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Errorf("early resend: %d %s (Retry-After %q)", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	r = e.call("PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "code": code}, true)
	if r.Status != 200 || r.Body["verified"] != true {
		t.Fatalf("right code: %d %s", r.Status, r.Raw)
	}
	r = e.call("POST", "/v1/verification/sessions/status", nil, map[string]any{"session_id": id}, true)
	if r.Status != 200 || r.Body["verified"] != true || r.Body["session_id"] != nil {
		t.Errorf("status: %d %s", r.Status, r.Raw)
	}
	// The log shows the number masked, never whole.
	if log := e.logBuf.String(); contains(log, "4930901820") || !contains(log, "+49******20") {
		t.Errorf("log does not mask the number: %s", log)
	}
}

func TestVerificationLimits(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.verify.DenyCallingCodes = map[string]bool{"7": true} })
	r := e.call("POST", "/v1/verification/sessions", nil, map[string]any{"number": "+79161234567"}, true)
	if r.Status != 422 || r.errCode() != "calling_code_not_served" {
		t.Errorf("denied calling code: %d %s", r.Status, r.Raw)
	}
	// Per-IP send limit (10 a burst by default): distinct numbers from one address.
	limited := false
	for i := range 15 {
		n := "+4420794602" + strconv.Itoa(10+i)
		r = e.call("POST", "/v1/verification/sessions", nil, map[string]any{"number": n}, true)
		if r.Status == 429 {
			limited = true
			if r.Header.Get("Retry-After") == "" || r.errCode() != "rate_limited" {
				t.Errorf("429 without Retry-After or code: %s", r.Raw)
			}
			break
		}
		if r.Status != 200 {
			t.Fatalf("session %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if !limited {
		t.Error("15 sessions from one IP were all allowed")
	}
	// Test numbers are exempt from send limits, but not from attempt limits.
	r = e.call("POST", "/v1/verification/sessions", nil, map[string]any{"number": aliceNumber}, true)
	if r.Status != 200 {
		t.Fatalf("test number after IP limit: %d %s", r.Status, r.Raw)
	}
	id := r.Body["session_id"].(string)
	for i := 0; i < 5; i++ {
		r = e.call("PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "code": "000001"}, true)
		if r.Status != 403 {
			t.Fatalf("wrong code %d: %d %s", i, r.Status, r.Raw)
		}
	}
	r = e.call("PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "code": testCode}, true)
	if r.Status != 429 || r.errCode() != "no_attempts_left" {
		t.Errorf("sixth check with the right code: %d %s", r.Status, r.Raw)
	}
	// A session that is not verified cannot register.
	r = e.call("POST", "/v1/accounts", nil, newDevice(t).registration(t, id, 0), true)
	if r.Status != 403 || r.errCode() != "session_not_verified" {
		t.Errorf("register with unverified session: %d %s", r.Status, r.Raw)
	}
	r = e.call("POST", "/v1/verification/sessions/status", nil, map[string]any{"session_id": "nonexistent"}, true)
	if r.Status != 404 {
		t.Errorf("unknown session: %d %s", r.Status, r.Raw)
	}
}

func TestRegistrationLock(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 1)
	token := make([]byte, 32)
	for i := range token {
		token[i] = byte(i)
	}
	if r := e.call("PUT", "/v1/accounts/me/registration-lock", alice, map[string]any{"token": b64(token)}, true); r.Status != 204 {
		t.Fatalf("set lock: %d %s", r.Status, r.Raw)
	}
	if r := e.call("GET", "/v1/accounts/me", alice, nil, true); r.Body["registration_lock"] != true {
		t.Errorf("whoami after lock: %s", r.Raw)
	}
	// Without the token: 423, and no attempt is used up.
	thief := newDevice(t)
	session := e.verified(aliceNumber)
	r := e.call("POST", "/v1/accounts", nil, thief.registration(t, session, 0), true)
	if r.Status != 423 || r.detail("attempts_left") != 10.0 || r.detail("time_remaining_seconds") != nil {
		t.Fatalf("re-register without token: %d %s", r.Status, r.Raw)
	}
	// A wrong token uses one attempt, and uses up the session: each guess
	// costs a fresh SMS verification.
	req := thief.registration(t, session, 0)
	req["registration_lock"] = b64(make([]byte, 32))
	if r = e.call("POST", "/v1/accounts", nil, req, true); r.Status != 423 || r.detail("attempts_left") != 9.0 {
		t.Fatalf("wrong token: %d %s", r.Status, r.Raw)
	}
	req["registration_lock"] = b64(token)
	if r = e.call("POST", "/v1/accounts", nil, req, true); r.Status != 404 || r.errCode() != "session_not_found" {
		t.Fatalf("session after a wrong token: %d %s", r.Status, r.Raw)
	}
	// Alice's device still works: nothing was replaced.
	if r = e.call("GET", "/v1/accounts/me", alice, nil, true); r.Status != 200 {
		t.Fatalf("locked-out thief disturbed the account: %d", r.Status)
	}
	// The owner, with the token, re-registers.
	owner := newDevice(t)
	req = owner.registration(t, e.verified(aliceNumber), 0)
	req["registration_lock"] = b64(token)
	r = e.call("POST", "/v1/accounts", nil, req, true)
	if r.Status != 200 || r.Body["account_id"] != alice.Account {
		t.Fatalf("re-register with token: %d %s", r.Status, r.Raw)
	}
	// The old device's credential no longer authenticates; the new one does.
	if r = e.call("GET", "/v1/accounts/me", alice, nil, true); r.Status != 401 {
		t.Errorf("old device after re-registration: %d", r.Status)
	}
	newCreds := &creds{Account: alice.Account, Device: 1, Secret: owner.secret}
	if r = e.call("GET", "/v1/accounts/me", newCreds, nil, true); r.Status != 200 || r.Body["registration_lock"] != true {
		t.Errorf("new device: %d %s", r.Status, r.Raw)
	}
	if r = e.call("DELETE", "/v1/accounts/me/registration-lock", newCreds, nil, true); r.Status != 204 {
		t.Errorf("remove lock: %d %s", r.Status, r.Raw)
	}
	// Unlocked: anyone who verifies the number may re-register it.
	if r = e.call("POST", "/v1/accounts", nil, thief.registration(t, e.verified(aliceNumber), 0), true); r.Status != 200 {
		t.Errorf("re-register unlocked: %d %s", r.Status, r.Raw)
	}
}

// TestForbiddenPaths tries every authorisation decision the wrong way.
func TestForbiddenPaths(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 1)
	_, bob := e.register(bobNumber, 1)
	wrongSecret := &creds{Account: alice.Account, Device: 1, Secret: bob.Secret}
	otherDevice := &creds{Account: alice.Account, Device: 2, Secret: alice.Secret}
	crossed := &creds{Account: bob.Account, Device: 1, Secret: alice.Secret}
	for _, c := range []struct {
		name   string
		method string
		path   string
		creds  *creds
		body   any
	}{
		{"no credentials", "GET", "/v1/accounts/me", nil, nil},
		{"wrong secret", "GET", "/v1/accounts/me", wrongSecret, nil},
		{"unknown device", "GET", "/v1/devices", otherDevice, nil},
		{"another account's id", "GET", "/v1/keys/count", crossed, nil},
		{"malformed username", "GET", "/v1/devices", &creds{Account: "not-a-uuid", Device: 1, Secret: alice.Secret}, nil},
		{"upload without auth", "PUT", "/v1/keys", nil, map[string]any{}},
		{"fetch without auth", "GET", "/v1/keys/" + alice.Account + "/*", nil, nil},
		{"delete account without auth", "DELETE", "/v1/accounts/me", nil, nil},
		{"lock without auth", "PUT", "/v1/accounts/me/registration-lock", nil, map[string]any{"token": b64(make([]byte, 32))}},
		{"remove device without auth", "DELETE", "/v1/devices/2", nil, nil},
	} {
		r := e.call(c.method, c.path, c.creds, c.body, false)
		if r.Status != 401 || r.errCode() != "unauthorized" || r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Raw)
		}
	}
	if r := e.call("DELETE", "/v1/devices/1", alice, nil, true); r.Status != 409 || r.errCode() != "primary_device" {
		t.Errorf("remove primary: %d %s", r.Status, r.Raw)
	}
	if r := e.call("DELETE", "/v1/devices/5", alice, nil, true); r.Status != 404 {
		t.Errorf("remove missing device: %d %s", r.Status, r.Raw)
	}
	// Deleting the account revokes its credential and its bundle at once.
	if r := e.call("DELETE", "/v1/accounts/me", alice, nil, true); r.Status != 204 {
		t.Fatalf("delete account: %d %s", r.Status, r.Raw)
	}
	if r := e.call("GET", "/v1/accounts/me", alice, nil, true); r.Status != 401 {
		t.Errorf("deleted account still authenticates: %d", r.Status)
	}
	if r := e.call("GET", "/v1/keys/"+alice.Account+"/*", bob, nil, true); r.Status != 404 {
		t.Errorf("bundle of deleted account: %d %s", r.Status, r.Raw)
	}
	for _, table := range []string{"accounts", "devices", "ec_prekeys", "kem_prekeys", "signed_prekeys", "kem_last_resort_prekeys"} {
		rows, err := e.db.DumpTable(t.Context(), table)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 && table != "ec_prekeys" && table != "kem_prekeys" || len(rows) > 1 {
			t.Errorf("%s holds %d rows after Alice's deletion, want only Bob's", table, len(rows))
		}
	}
}

func TestPrekeyFetchRateLimit(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	limited := false
	for range 60 { // per-target limit in this env: 30 at once
		r := e.call("GET", "/v1/keys/"+alice.Account+"/1", bob, nil, true)
		if r.Status == 429 {
			limited = r.Header.Get("Retry-After") != ""
			break
		}
	}
	if !limited {
		t.Error("60 rapid bundle fetches of one target were never limited")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
