package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// sealedEnv is a harness with bob accepting sealed sends by key.
func sealedEnv(t testing.TB) (e *env, alice, bob *creds, key []byte) {
	e = newEnv(t)
	_, alice = e.register(aliceNumber, 0)
	_, bob = e.register(bobNumber, 0)
	key = make([]byte, 16)
	rand.Read(key)
	if r := e.call("PUT", "/v1/accounts/me/unidentified-access", bob, map[string]any{"unidentified_access_key": base64.StdEncoding.EncodeToString(key)}, true); r.Status != 204 {
		t.Fatalf("set unidentified access: %d %s", r.Status, r.Raw)
	}
	return e, alice, bob, key
}

func uak(key []byte) http.Header {
	return http.Header{"Unidentified-Access-Key": {base64.StdEncoding.EncodeToString(key)}}
}

// mrm is a minimal well-formed sealed sender v2 sent message for one
// recipient device (the relay reads only its routing headers).
func mrm(account string, device byte, regID uint16) []byte {
	id := uuid.MustParse(account)
	b := []byte{0x23, 1, 0}
	b = append(b, id[:]...)
	b = append(b, device, byte(regID>>8), byte(regID))
	b = append(b, bytes.Repeat([]byte{7}, 48)...)    // C and AT
	return append(b, bytes.Repeat([]byte{9}, 64)...) // E.pub and ciphertext
}

// manyRecipients is a sent message naming n made-up accounts.
func manyRecipients(n int) []byte {
	b := []byte{0x23}
	b = binary.AppendUvarint(b, uint64(n))
	for range n {
		id := uuid.New()
		b = append(append(append(b, 0), id[:]...), 1, 0, 1)
		b = append(b, make([]byte, 48)...)
	}
	return append(b, make([]byte, 64)...)
}

// Hostile and malformed sealed sends and access-key settings: each a clear
// 4xx, nothing stored.
func TestSealedHostile(t *testing.T) {
	e, alice, bob, key := sealedEnv(t)
	sealedBody := `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":6,"content":"aGk="}]}`
	wrong := append([]byte(nil), key...)
	wrong[0] ^= 1
	mrmHeader := func(k []byte) http.Header {
		h := uak(k)
		h.Set("Content-Type", "application/vnd.signal-messenger.mrm")
		return h
	}
	for _, c := range []struct {
		name, method, path string
		c                  *creds
		h                  http.Header
		body               any
		status             int
		code               string
	}{
		{"sealed: wrong key", "PUT", sendTo(bob), nil, uak(wrong), sealedBody, 401, "unauthorized"},
		{"sealed: key not base64", "PUT", sendTo(bob), nil, http.Header{"Unidentified-Access-Key": {"!!"}}, sealedBody, 401, "unauthorized"},
		{"sealed: key too long", "PUT", sendTo(bob), nil, uak(append(key, 1)), sealedBody, 401, "unauthorized"},
		{"sealed: unknown account", "PUT", "/v1/messages/" + uuid.NewString(), nil, uak(key), sealedBody, 401, "unauthorized"},
		{"sealed: key and credentials", "PUT", sendTo(bob), alice, uak(key), sealedBody, 400, "ambiguous_credentials"},
		{"sealed: identified type", "PUT", sendTo(bob), nil, uak(key), sendBody(1, 1234, "aGk="), 422, "invalid_message"},
		{"sealed: account id not a UUID", "PUT", "/v1/messages/bob", nil, uak(key), sealedBody, 400, "invalid_account_id"},
		{"identified: sealed type", "PUT", sendTo(bob), alice, nil, sealedBody, 422, "invalid_message"},
		{"access: 15-byte key", "PUT", "/v1/accounts/me/unidentified-access", bob, nil, `{"unidentified_access_key":"` + base64.StdEncoding.EncodeToString(make([]byte, 15)) + `"}`, 422, "invalid_unidentified_access_key"},
		{"access: key not base64", "PUT", "/v1/accounts/me/unidentified-access", bob, nil, `{"unidentified_access_key":"!!!!!!!!!!!!!!!!!!!!!!!!"}`, 400, "invalid_json"},
		{"access: unknown member", "PUT", "/v1/accounts/me/unidentified-access", bob, nil, `{"unidentified_access_key":null,"everyone":true}`, 400, "invalid_json"},
		{"access: no credentials", "PUT", "/v1/accounts/me/unidentified-access", nil, nil, `{"unidentified_access_key":null}`, 401, "unauthorized"},
		{"multi: wrong key", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(wrong), mrm(bob.Account, 1, 1234), 401, "unauthorized"},
		{"multi: credentials", "PUT", "/v1/messages/multi_recipient?ts=1", alice, mrmHeader(key), mrm(bob.Account, 1, 1234), 400, "ambiguous_credentials"},
		{"multi: JSON body", "PUT", "/v1/messages/multi_recipient?ts=1", nil, uak(key), `{}`, 415, "unsupported_media_type"},
		{"multi: no timestamp", "PUT", "/v1/messages/multi_recipient", nil, mrmHeader(key), mrm(bob.Account, 1, 1234), 422, "invalid_message"},
		{"multi: online", "PUT", "/v1/messages/multi_recipient?ts=1&online=true", nil, mrmHeader(key), mrm(bob.Account, 1, 1234), 422, "invalid_message"},
		{"multi: urgent not a boolean", "PUT", "/v1/messages/multi_recipient?ts=1&urgent=yes", nil, mrmHeader(key), mrm(bob.Account, 1, 1234), 422, "invalid_message"},
		{"multi: empty", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), []byte{}, 400, "invalid_multi_recipient_message"},
		{"multi: v1 message", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), []byte{0x11, 1, 2, 3}, 400, "invalid_multi_recipient_message"},
		{"multi: truncated", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), mrm(bob.Account, 1, 1234)[:20], 400, "invalid_multi_recipient_message"},
		{"multi: device 0", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), append(mrm(bob.Account, 1, 1234)[:19], 0x80), 400, "invalid_multi_recipient_message"},
		{"multi: stale registration id", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), mrm(bob.Account, 1, 99), 409, ""},
		{"multi: over 1000 recipients", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), manyRecipients(1001), 422, "invalid_message"},
		{"multi: copies over 96 KiB", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), append(mrm(bob.Account, 1, 1234), make([]byte, 96<<10)...), 422, "invalid_message"},
		{"multi: oversized", "PUT", "/v1/messages/multi_recipient?ts=1", nil, mrmHeader(key), append(mrm(bob.Account, 1, 1234), make([]byte, 5<<20)...), 413, "body_too_large"},
	} {
		r := e.callHeader(c.method, c.path, c.c, c.body, c.h, false)
		if r.Status != c.status || (c.code != "" && r.errCode() != c.code) {
			if !(c.status == 409 && r.Status == 410) { // stale ids answer 410
				t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.code)
			}
		}
	}
	queued := func() int {
		es, err := e.db.Pending(context.Background(), uuid.MustParse(bob.Account), 1, 0, time.Now(), 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	if got := queued(); got != 0 {
		t.Errorf("refused sends stored %d envelopes", got)
	}
	// The right key stores it.
	if r := e.callHeader("PUT", sendTo(bob), nil, sealedBody, uak(key), true); r.Status != 200 {
		t.Fatalf("sealed send: %d %s", r.Status, r.Raw)
	}
	if r := e.callHeader("PUT", "/v1/messages/multi_recipient?ts=1&urgent=true", nil, mrm(bob.Account, 1, 1234), mrmHeader(key), true); r.Status != 200 {
		t.Fatalf("multi-recipient sealed send: %d %s", r.Status, r.Raw)
	}
	if got := queued(); got != 2 {
		t.Errorf("%d envelopes stored, want 2", got)
	}
}

// FuzzSealedRequests: no key or body makes a sealed endpoint fail with a
// 5xx or answer an error without a code.
func FuzzSealedRequests(f *testing.F) {
	f.Add(uint8(0), []byte("AAAAAAAAAAAAAAAAAAAAAA=="), []byte(`{"timestamp":1,"messages":[{"device_id":1,"registration_id":1,"type":6,"content":"aGk="}]}`))
	f.Add(uint8(1), []byte("AAAAAAAAAAAAAAAAAAAAAA=="), mrm(uuid.NewString(), 1, 1))
	f.Add(uint8(1), []byte(""), []byte{0x22, 0xff, 0xff, 0xff, 0xff, 0x0f})
	e, _, bob, _ := sealedEnv(f)
	f.Fuzz(func(t *testing.T, which uint8, key, body []byte) {
		for _, c := range key {
			if c < 0x20 || c > 0x7e {
				t.Skip("not a value an HTTP client sends in a header")
			}
		}
		e := *e
		e.t = t
		h := http.Header{"Unidentified-Access-Key": {string(key)}}
		path := sendTo(bob)
		if which%2 == 1 {
			path = "/v1/messages/multi_recipient?ts=1"
			h.Set("Content-Type", "application/vnd.signal-messenger.mrm")
		}
		r := e.callHeader("PUT", path, nil, body, h, false)
		if r.Status >= 500 || (r.Status >= 400 && r.errCode() == "") {
			t.Fatalf("PUT %s with %q: %d %s", path, body, r.Status, r.Raw)
		}
	})
}
