package api_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/push"
)

const testVAPIDKey = "BHf3a0KJgnW1lH4Hh6vSzF4b7m1c2pQk9z8x7w6v5u4t3s2r1q0p9o8n7m6l5k4j3i2h1g0f9e8d7c6b5a4z3y2x1w0"

// Push targets: what a device registers is checked, only services the
// relay is configured for are taken, and the target is the device's own.
func TestPushTargets(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	p256 := base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
	auth := base64.StdEncoding.EncodeToString(make([]byte, 16))
	web := map[string]any{"kind": "webpush", "endpoint": "https://push.example.org/u/abc", "p256dh": p256, "auth": auth}
	for _, c := range []struct {
		name   string
		c      *creds
		body   any
		status int
		code   string
	}{
		{"web push", alice, web, 204, ""},
		{"apns", alice, map[string]any{"kind": "apns", "token": "ab12" + string(bytes.Repeat([]byte("cd"), 30)), "topic": "org.example.app"}, 204, ""},
		{"apns for another app", alice, map[string]any{"kind": "apns", "token": string(bytes.Repeat([]byte("ab"), 32)), "topic": "org.example.other"}, 422, "invalid_push_target"},
		{"web push key not on the curve", alice, map[string]any{"kind": "webpush", "endpoint": "https://push.example.org/u", "p256dh": base64.StdEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...)), "auth": auth}, 422, "invalid_push_target"},
		{"endpoint that escapes past the stored size", alice, map[string]any{"kind": "webpush", "endpoint": "https://push.example.org/" + string(bytes.Repeat([]byte("&"), 1000)), "p256dh": p256, "auth": auth}, 422, "invalid_push_target"},
		{"fcm not configured", alice, map[string]any{"kind": "fcm", "token": "fcm-registration-token-0123456789"}, 422, "push_service_not_configured"},
		{"no credentials", nil, web, 401, "unauthorized"},
		{"unknown kind", alice, map[string]any{"kind": "pager", "token": "x"}, 422, "invalid_push_target"},
		{"http endpoint", alice, map[string]any{"kind": "webpush", "endpoint": "http://push.example.org/u", "p256dh": p256, "auth": auth}, 422, "invalid_push_target"},
		{"endpoint with credentials", alice, map[string]any{"kind": "webpush", "endpoint": "https://u:p@push.example.org/u", "p256dh": p256, "auth": auth}, 422, "invalid_push_target"},
		{"short key", alice, map[string]any{"kind": "webpush", "endpoint": "https://push.example.org/u", "p256dh": auth, "auth": auth}, 422, "invalid_push_target"},
		{"apns token not hex", alice, map[string]any{"kind": "apns", "token": "not hex at all, really not hex at all, really not hex at all!!", "topic": "org.example.app"}, 422, "invalid_push_target"},
		{"apns with web push keys", alice, map[string]any{"kind": "apns", "token": string(bytes.Repeat([]byte("ab"), 32)), "topic": "org.example.app", "auth": auth}, 422, "invalid_push_target"},
		{"unknown member", alice, map[string]any{"kind": "webpush", "endpoint": "https://push.example.org/u", "p256dh": p256, "auth": auth, "account": uuid.NewString()}, 400, "invalid_json"},
		{"not JSON", alice, "kind=webpush", 400, "invalid_json"},
	} {
		r := e.call("PUT", "/v1/devices/me/push", c.c, c.body, false)
		if r.Status != c.status || (c.code != "" && r.errCode() != c.code) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.code)
		}
	}
	got, err := e.db.PushTarget(t.Context(), uuid.MustParse(alice.Account), 1)
	if err != nil || got.Kind != push.APNs {
		t.Errorf("stored target: %+v %v (want the last good one, APNs)", got, err)
	}
	if r := e.call("DELETE", "/v1/devices/me/push", alice, nil, true); r.Status != 204 {
		t.Errorf("delete: %d %s", r.Status, r.Raw)
	}
	if _, err := e.db.PushTarget(t.Context(), uuid.MustParse(alice.Account), 1); err == nil {
		t.Error("the target survived its deletion")
	}
	r := e.call("GET", "/v1/push", nil, nil, true)
	if r.Status != 200 || r.Body["vapid_public_key"] != testVAPIDKey {
		t.Errorf("GET /v1/push: %d %s", r.Status, r.Raw)
	}
}
