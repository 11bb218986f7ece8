package api_test

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/wire"
)

// linkBody is what a new device sends to join owner's account: its own
// credential and keys signed by the account's identity (owner.identity).
func linkBody(t *testing.T, owner *device, account, code string) (map[string]any, string) {
	s := make([]byte, 32)
	rand.Read(s)
	cred := base64.RawURLEncoding.EncodeToString(s)
	return map[string]any{
		"account_id": account, "code": code, "credential": cred, "registration_id": 4321,
		"signed_prekey": owner.signedPreKey(t, 1), "pq_last_resort_prekey": owner.pqPreKey(1),
		"prekeys": owner.preKeys(t, 1, 3), "pq_prekeys": owner.pqPreKeys(1, 3),
	}, cred
}

func (e *env) linkCode(c *creds) response {
	e.t.Helper()
	return e.call("POST", "/v1/devices/link-code", c, nil, true)
}

// TestLinkDevice tries the linking flow and every forbidden path: linked
// devices cannot hand out codes, codes are single-use, per account and
// expire, keys must carry the account identity's signatures, and an account
// has at most six devices.
func TestLinkDevice(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	e := newEnv(t, func(c *envConfig) { c.now = func() time.Time { return time.UnixMilli(clock.Load()) } })
	aliceDev, alice := e.register(aliceNumber, 1)
	bobDev, bob := e.register(bobNumber, 1)

	r := e.linkCode(alice)
	if r.Status != 200 {
		t.Fatalf("link code: %d %s", r.Status, r.Raw)
	}
	code := r.Body["code"].(string)
	body, cred := linkBody(t, aliceDev, alice.Account, code)
	if r := e.call("POST", "/v1/devices/link", nil, body, true); r.Status != 200 || r.Body["device_id"] != 2.0 {
		t.Fatalf("link: %d %s", r.Status, r.Raw)
	}
	linked := &creds{Account: alice.Account, Device: 2, Secret: cred}
	if r := e.call("GET", "/v1/accounts/me", linked, nil, true); r.Status != 200 || r.Body["device_id"] != 2.0 {
		t.Fatalf("linked device cannot authenticate: %d %s", r.Status, r.Raw)
	}
	if r := e.call("GET", "/v1/devices", alice, nil, true); len(r.Body["devices"].([]any)) != 2 {
		t.Fatalf("devices: %s", r.Raw)
	}

	expect := func(name string, r response, status int, code string) {
		t.Helper()
		if r.Status != status || r.errCode() != code {
			t.Errorf("%s: got %d %s, want %d %s", name, r.Status, r.Raw, status, code)
		}
	}
	again, _ := linkBody(t, aliceDev, alice.Account, code)
	expect("code used twice", e.call("POST", "/v1/devices/link", nil, again, true), 403, "invalid_link_code")
	expect("code from a linked device", e.linkCode(linked), 403, "forbidden")
	expect("code without credentials", e.call("POST", "/v1/devices/link-code", nil, nil, false), 401, "unauthorized")

	fresh := e.linkCode(alice).Body["code"].(string)
	other, _ := linkBody(t, bobDev, bob.Account, fresh)
	expect("alice's code for bob's account", e.call("POST", "/v1/devices/link", nil, other, true), 403, "invalid_link_code")
	foreign, _ := linkBody(t, newDevice(t), alice.Account, fresh)
	expect("keys not signed by the account identity", e.call("POST", "/v1/devices/link", nil, foreign, true), 422, "bad_signature")
	// The refused attempts did not use the code up.
	ok, _ := linkBody(t, aliceDev, alice.Account, fresh)
	if r := e.call("POST", "/v1/devices/link", nil, ok, true); r.Status != 200 || r.Body["device_id"] != 3.0 {
		t.Fatalf("second link: %d %s", r.Status, r.Raw)
	}

	late := e.linkCode(alice).Body["code"].(string)
	clock.Add((11 * time.Minute).Milliseconds())
	expired, _ := linkBody(t, aliceDev, alice.Account, late)
	expect("expired code", e.call("POST", "/v1/devices/link", nil, expired, true), 403, "invalid_link_code")

	for i := 4; i <= 6; i++ {
		b, _ := linkBody(t, aliceDev, alice.Account, e.linkCode(alice).Body["code"].(string))
		if r := e.call("POST", "/v1/devices/link", nil, b, true); r.Status != 200 {
			t.Fatalf("device %d: %d %s", i, r.Status, r.Raw)
		}
	}
	seventh, _ := linkBody(t, aliceDev, alice.Account, e.linkCode(alice).Body["code"].(string))
	expect("a seventh device", e.call("POST", "/v1/devices/link", nil, seventh, true), 409, "too_many_devices")
}

// TestProvisioningSocket: the message reaches the waiting socket once; no
// one else can deliver to an address that is not waiting.
func TestProvisioningSocket(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.srv.URL, "http")+"/v1/provisioning", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var f wire.ProvisioningFrame
	if err := ws.ReadJSON(&f); err != nil || f.Type != "address" || len(f.Address) != 22 {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	if n := rowCount(t, e, "provisioning_mailboxes"); n != 1 {
		t.Fatalf("%d mailboxes", n)
	}
	expect := func(name string, r response, status int, code string) {
		t.Helper()
		if r.Status != status || r.errCode() != code {
			t.Errorf("%s: got %d %s, want %d %s", name, r.Status, r.Raw, status, code)
		}
	}
	// A message of the largest size allowed (an account with many contacts
	// and groups) goes through the database and the socket whole.
	sealed := []byte(strings.Repeat("sealed provisioning message ", wire.MaxProvisioningBody/28+1)[:wire.MaxProvisioningBody])
	expect("no credentials", e.call("PUT", "/v1/provisioning/"+f.Address, nil, map[string]any{"body": b64(sealed)}, true), 401, "unauthorized")
	expect("nobody waiting", e.call("PUT", "/v1/provisioning/AAAAAAAAAAAAAAAAAAAAAA", alice, map[string]any{"body": b64(sealed)}, true), 404, "provisioning_address_not_found")
	expect("malformed address", e.call("PUT", "/v1/provisioning/..%2f", alice, map[string]any{"body": b64(sealed)}, false), 422, "invalid_provisioning_message")
	expect("empty body", e.call("PUT", "/v1/provisioning/"+f.Address, alice, map[string]any{"body": ""}, false), 422, "invalid_provisioning_message")
	expect("oversized body", e.call("PUT", "/v1/provisioning/"+f.Address, alice, map[string]any{"body": b64(make([]byte, 257<<10))}, false), 422, "invalid_provisioning_message")
	if r := e.call("PUT", "/v1/provisioning/"+f.Address, alice, map[string]any{"body": b64(sealed)}, true); r.Status != 204 {
		t.Fatalf("deliver: %d %s", r.Status, r.Raw)
	}
	expect("second delivery", e.call("PUT", "/v1/provisioning/"+f.Address, alice, map[string]any{"body": b64(sealed)}, true), 404, "provisioning_address_not_found")
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&f); err != nil || f.Type != "message" || string(f.Body) != string(sealed) {
		t.Fatalf("message frame %+v, %v", f, err)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the message: %v", err)
	}
	waitFor(t, func() bool { return rowCount(t, e, "provisioning_mailboxes") == 0 })
}
