package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHostileInput sends malformed, oversized and hostile requests to every
// endpoint: each gets a 4xx JSON error body and changes nothing.
func TestHostileInput(t *testing.T) {
	e := newEnv(t)
	dev, alice := e.register(aliceNumber, 1)
	_, bob := e.register(bobNumber, 0)

	// A verified session, so that the key checks are reached: a bogus
	// session is refused before any signature is checked.
	sid := e.verified(carolNumber)
	goodReg := func() map[string]any { return newDevice(t).registration(t, sid, 0) }
	mutate := func(f func(m map[string]any)) string {
		m := goodReg()
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	spk := dev.signedPreKey(t, 3)
	badSig := dev.signedPreKey(t, 3)
	badSig["signature"] = spk["signature"] // signature over another key
	otherDev := newDevice(t)
	foreign := otherDev.signedPreKey(t, 4) // signed by another identity
	raw33 := base64.StdEncoding.EncodeToString(append([]byte{5}, make([]byte, 32)...))
	big := `{"number":"` + strings.Repeat("1", 600<<10) + `"}`
	bkt := e.newBucket(alice)
	linkMutate := func(f func(m map[string]any)) map[string]any {
		m, _ := linkBody(t, dev, alice.Account, "not-a-real-code")
		f(m)
		return m
	}
	h32, h32b := hashOf([]byte("a")), hashOf([]byte("b"))

	cases := []struct {
		name, method, path string
		creds              *creds
		body               string
		status             int
		code               string
	}{
		{"not JSON", "POST", "/v1/verification/sessions", nil, `number=+44`, 400, "invalid_json"},
		{"empty body", "POST", "/v1/verification/sessions", nil, ``, 400, "invalid_json"},
		{"trailing data", "POST", "/v1/verification/sessions", nil, `{"number":"+442079460000"} {}`, 400, "invalid_json"},
		{"duplicate key", "POST", "/v1/verification/sessions", nil, `{"number":"+442079460000","number":"+442079460001"}`, 400, "invalid_json"},
		{"case-folded key", "POST", "/v1/verification/sessions", nil, `{"Number":"+442079460000"}`, 400, "invalid_json"},
		{"unknown field", "POST", "/v1/verification/sessions", nil, `{"number":"+442079460000","admin":true}`, 400, "invalid_json"},
		{"wrong type", "POST", "/v1/verification/sessions", nil, `{"number":442079460000}`, 400, "invalid_json"},
		{"array body", "POST", "/v1/verification/sessions", nil, `[]`, 400, "invalid_json"},
		{"invalid UTF-8", "POST", "/v1/verification/sessions", nil, "{\"number\":\"+44\xff\"}", 400, "invalid_json"},
		{"oversized body", "POST", "/v1/verification/sessions", nil, big, 413, "body_too_large"},
		{"number without plus", "POST", "/v1/verification/sessions", nil, `{"number":"442079460000"}`, 422, "invalid_number"},
		{"number with letters", "POST", "/v1/verification/sessions", nil, `{"number":"+44207946000O"}`, 422, "invalid_number"},
		{"number too long", "POST", "/v1/verification/sessions", nil, `{"number":"+4420794600001234567"}`, 422, "invalid_number"},
		{"empty session id", "PUT", "/v1/verification/sessions/code", nil, `{"session_id":"","code":"123456"}`, 400, "invalid_session_id"},
		{"huge session id", "PUT", "/v1/verification/sessions/code", nil, `{"session_id":"` + strings.Repeat("a", 65) + `","code":"123456"}`, 400, "invalid_session_id"},
		{"code with letters", "PUT", "/v1/verification/sessions/code", nil, `{"session_id":"abc","code":"12345a"}`, 400, "invalid_code_format"},
		{"code too long", "PUT", "/v1/verification/sessions/code", nil, `{"session_id":"abc","code":"1234567"}`, 400, "invalid_code_format"},
		{"unknown session", "PUT", "/v1/verification/sessions/code", nil, `{"session_id":"abc","code":"123456"}`, 404, "session_not_found"},
		{"resend bad number", "POST", "/v1/verification/sessions/code", nil, `{"session_id":"abc","number":"+1"}`, 422, "invalid_number"},

		{"register: identity key raw 32 bytes", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["identity_key"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}), 422, "invalid_key"},
		{"register: base64 with newline", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			s := m["identity_key"].(string)
			m["identity_key"] = s[:10] + "\n" + s[10:]
		}), 400, "invalid_json"},
		{"register: URL-safe base64", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["identity_key"] = strings.NewReplacer("+", "-", "/", "_").Replace(raw33) + "-"
		}), 400, "invalid_json"},
		{"register: unpadded base64", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["identity_key"] = strings.TrimRight(raw33, "=")[:43]
		}), 400, "invalid_json"},
		{"register: signature by another identity", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["signed_prekey"] = foreign
		}), 422, "bad_signature"},
		{"register: short PQ key", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["pq_last_resort_prekey"].(map[string]any)["public_key"] = raw33
		}), 422, "invalid_key"},
		{"register: key id 0", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["signed_prekey"].(map[string]any)["key_id"] = 0
		}), 422, "invalid_key_id"},
		{"register: negative key id", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["signed_prekey"].(map[string]any)["key_id"] = -1
		}), 400, "invalid_json"},
		{"register: registration id 0", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) { m["registration_id"] = 0 }), 422, "invalid_registration_id"},
		{"register: short credential", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) { m["credential"] = "short" }), 422, "invalid_credential"},
		{"register: credential with colon", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			m["credential"] = strings.Repeat("a", 40) + ":x"
		}), 422, "invalid_credential"},
		{"register: 101 prekeys", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) { m["prekeys"] = dev.preKeys(t, 1, 101) }), 422, "too_many_keys"},
		{"register: repeated prekey id", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) {
			pk := dev.preKeys(t, 7, 1)
			m["prekeys"] = append(pk, pk...)
		}), 422, "duplicate_key_id"},
		{"register: unknown session", "POST", "/v1/accounts", nil, mutate(func(m map[string]any) { m["session_id"] = "x" }), 404, "session_not_found"},

		{"upload: bad signature", "PUT", "/v1/keys", alice, `{"signed_prekey":` + mustJSON(badSig) + `}`, 422, "bad_signature"},
		{"upload: unknown member", "PUT", "/v1/keys", alice, `{"prekeys":[],"extra":1}`, 400, "invalid_json"},
		{"upload: null", "PUT", "/v1/keys", alice, `null`, 400, "invalid_json"},
		{"upload: wrong content type", "PUT", "/v1/keys", alice, `{}`, 415, "unsupported_media_type"},
		{"lock: short token", "PUT", "/v1/accounts/me/registration-lock", alice, `{"token":"AAAA"}`, 422, "invalid_lock_token"},
		{"fetch: bad account id", "GET", "/v1/keys/not-a-uuid/1", bob, ``, 400, "invalid_account_id"},
		{"fetch: device 0", "GET", "/v1/keys/" + alice.Account + "/0", bob, ``, 400, "invalid_device_id"},
		{"fetch: device 01", "GET", "/v1/keys/" + alice.Account + "/01", bob, ``, 400, "invalid_device_id"},
		{"fetch: huge device", "GET", "/v1/keys/" + alice.Account + "/99999999999999999999", bob, ``, 400, "invalid_device_id"},
		{"fetch: unknown account", "GET", "/v1/keys/00000000-0000-4000-8000-000000000000/*", bob, ``, 404, "not_found"},
		{"remove: device abc", "DELETE", "/v1/devices/abc", alice, ``, 400, "invalid_device_id"},
		{"send: no auth", "PUT", sendTo(bob), nil, sendBody(1, 1234, "aGk="), 401, "unauthorized"},
		{"send: bad account id", "PUT", "/v1/messages/nope", alice, sendBody(1, 1234, "aGk="), 400, "invalid_account_id"},
		{"send: unknown account", "PUT", "/v1/messages/00000000-0000-4000-8000-000000000000", alice, sendBody(1, 1234, "aGk="), 404, "account_not_found"},
		{"send: no messages", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[]}`, 422, "invalid_message"},
		{"send: messages null", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":null}`, 422, "invalid_message"},
		{"send: no timestamp", "PUT", sendTo(bob), alice, `{"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: empty content", "PUT", sendTo(bob), alice, sendBody(1, 1234, ""), 422, "invalid_message"},
		{"send: base64 with non-zero padding bits", "PUT", sendTo(bob), alice, sendBody(1, 1234, "aGl="), 400, "invalid_json"},
		{"send: base64 with an escaped line break", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aG\u000Ak="}]}`, 400, "invalid_json"},
		{"send: content a number", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":12}]}`, 400, "invalid_json"},
		{"send: content null", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":null}]}`, 400, "invalid_json"},
		{"send: content over 96 KiB", "PUT", sendTo(bob), alice, sendBody(1, 1234, base64.StdEncoding.EncodeToString(make([]byte, 96<<10+1))), 422, "invalid_message"},
		{"send: online over 4 KiB", "PUT", sendTo(bob), alice, `{"timestamp":1,"online":true,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"` + base64.StdEncoding.EncodeToString(make([]byte, 4<<10+1)) + `"}]}`, 422, "invalid_message"},
		{"send: device 0", "PUT", sendTo(bob), alice, sendBody(0, 1234, "aGk="), 422, "invalid_message"},
		{"send: device 128", "PUT", sendTo(bob), alice, sendBody(128, 1234, "aGk="), 422, "invalid_message"},
		{"send: registration id 0", "PUT", sendTo(bob), alice, sendBody(1, 0, "aGk="), 422, "invalid_message"},
		{"send: type 0", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":0,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: type 256", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":256,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: device twice", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="},{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: negative expiry", "PUT", sendTo(bob), alice, `{"timestamp":1,"expires_in":-1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: huge expiry", "PUT", sendTo(bob), alice, `{"timestamp":1,"expires_in":9223372036854775807,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk="}]}`, 422, "invalid_message"},
		{"send: content not base64", "PUT", sendTo(bob), alice, sendBody(1, 1234, "!!!!"), 400, "invalid_json"},
		{"send: unknown member", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"aGk=","sender":"x"}]}`, 400, "invalid_json"},
		{"send: to own device", "PUT", sendTo(alice), alice, sendBody(1, 1234, "aGk="), 422, "invalid_message"},
		{"send: missing device", "PUT", sendTo(bob), alice, sendBody(2, 1234, "aGk="), 409, "mismatched_devices"},
		{"send: stale device", "PUT", sendTo(bob), alice, sendBody(1, 999, "aGk="), 410, "stale_devices"},
		{"send: oversized body", "PUT", sendTo(bob), alice, `{"timestamp":1,"messages":[{"device_id":1,"registration_id":1234,"type":1,"content":"` + strings.Repeat("A", 5<<20) + `"}]}`, 413, "body_too_large"},
		{"directory: no number", "POST", "/v1/directory", alice, `{}`, 422, "invalid_number"},
		{"directory: number is a list", "POST", "/v1/directory", alice, `{"number":["+442079460102"]}`, 400, "invalid_json"},
		{"directory: unknown member", "POST", "/v1/directory", alice, `{"number":"+442079460102","all":true}`, 400, "invalid_json"},
		{"directory: huge number", "POST", "/v1/directory", alice, `{"number":"+` + strings.Repeat("4", 100000) + `"}`, 422, "invalid_number"},
		{"directory: oversized body", "POST", "/v1/directory", alice, `{"number":"` + strings.Repeat(" ", 600<<10) + `"}`, 413, "body_too_large"},
		{"directory: no auth", "POST", "/v1/directory", nil, `{"number":"+442079460102"}`, 401, "unauthorized"},
		{"certificate: no auth", "GET", "/v1/certificate/delivery", nil, ``, 401, "unauthorized"},
		{"certificate: another account's id", "GET", "/v1/certificate/delivery", &creds{Account: bob.Account, Device: 1, Secret: alice.Secret}, ``, 401, "unauthorized"},
		{"certificate: device 2 not linked", "GET", "/v1/certificate/delivery", &creds{Account: alice.Account, Device: 2, Secret: alice.Secret}, ``, 401, "unauthorized"},
		{"certificate: POST", "POST", "/v1/certificate/delivery", alice, `{}`, 405, "method_not_allowed"},
		{"certificate: path below", "GET", "/v1/certificate/delivery/1", alice, ``, 404, "not_found"},
		{"trust root: PUT", "PUT", "/v1/certificate/trust-root", nil, `{"trust_root":"` + raw33 + `","key_id":1}`, 405, "method_not_allowed"},
		{"trust root: traversal", "GET", "/v1/certificate/trust-root/..%2f..%2froot.key", nil, ``, 404, "not_found"},
		{"websocket: plain GET", "GET", "/v1/websocket", bob, ``, 426, "upgrade_required"},
		{"websocket: no auth", "GET", "/v1/websocket", nil, ``, 401, "unauthorized"},
		{"unknown endpoint", "GET", "/v1/nope", nil, ``, 404, "not_found"},
		{"wrong method", "PATCH", "/v1/keys", alice, ``, 405, "method_not_allowed"},
		{"link: not JSON", "POST", "/v1/devices/link", nil, `account=1`, 400, "invalid_json"},
		{"link: unknown member", "POST", "/v1/devices/link", nil, `{"account_id":"` + alice.Account + `","admin":true}`, 400, "invalid_json"},
		{"link: account not a UUID", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["account_id"] = "../../x" })), 400, "invalid_account_id"},
		{"link: account upper case", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["account_id"] = strings.ToUpper(alice.Account) })), 400, "invalid_account_id"},
		{"link: huge code", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["code"] = strings.Repeat("c", 10000) })), 403, "invalid_link_code"},
		{"link: guessed code", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["code"] = "AAAA" })), 403, "invalid_link_code"},
		{"link: short credential", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["credential"] = "x" })), 422, "invalid_credential"},
		{"link: registration id 0", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["registration_id"] = 0 })), 422, "invalid_registration_id"},
		{"link: unknown account", "POST", "/v1/devices/link", nil, mustJSON(linkMutate(func(m map[string]any) { m["account_id"] = "00000000-0000-4000-8000-000000000000" })), 403, "invalid_link_code"},
		{"provisioning: not JSON", "PUT", "/v1/provisioning/AAAAAAAAAAAAAAAAAAAAAA", alice, `body`, 400, "invalid_json"},
		{"provisioning: plain GET", "GET", "/v1/provisioning", nil, ``, 426, "upgrade_required"},
		{"multi: not JSON", "PUT", "/v1/messages", alice, `x`, 400, "invalid_json"},
		{"multi: unknown member", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"aGk=","recipients":[],"to_all":true}`, 400, "invalid_json"},
		{"multi: empty content", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"","recipients":[{"account_id":"` + bob.Account + `","devices":[{"device_id":1,"registration_id":1234}]}]}`, 422, "invalid_message"},
		{"multi: device 0", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"aGk=","recipients":[{"account_id":"` + bob.Account + `","devices":[{"device_id":0,"registration_id":1234}]}]}`, 422, "invalid_message"},
		{"multi: duplicate device", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"aGk=","recipients":[{"account_id":"` + bob.Account + `","devices":[{"device_id":1,"registration_id":1234},{"device_id":1,"registration_id":1234}]}]}`, 422, "invalid_message"},
		{"multi: no devices", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"aGk=","recipients":[{"account_id":"` + bob.Account + `","devices":[]}]}`, 422, "invalid_message"},
		{"multi: type 0", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":0,"content":"aGk=","recipients":[{"account_id":"` + bob.Account + `","devices":[{"device_id":1,"registration_id":1234}]}]}`, 422, "invalid_message"},
		{"multi: negative expiry", "PUT", "/v1/messages", alice, `{"timestamp":1,"type":4,"content":"aGk=","expires_in":-1,"recipients":[{"account_id":"` + bob.Account + `","devices":[{"device_id":1,"registration_id":1234}]}]}`, 422, "invalid_message"},
		{"multi: no auth", "PUT", "/v1/messages", nil, `{"timestamp":1,"type":4,"content":"aGk=","recipients":[]}`, 401, "unauthorized"},
		{"bucket: hash too short", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"AAAA","admin_secret_hash":"` + h32 + `"}`, 422, "invalid_attachment_request"},
		{"bucket: hash not base64", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"!!","admin_secret_hash":"` + h32 + `"}`, 400, "invalid_json"},
		{"bucket: missing admin hash", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"` + h32 + `"}`, 422, "invalid_attachment_request"},
		{"bucket: negative retention", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"` + h32 + `","admin_secret_hash":"` + h32b + `","retention_seconds":-1}`, 422, "invalid_attachment_request"},
		{"bucket: huge retention", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"` + h32 + `","admin_secret_hash":"` + h32b + `","retention_seconds":9223372036854775807}`, 422, "invalid_attachment_request"},
		{"bucket: retention overflow", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"` + h32 + `","admin_secret_hash":"` + h32b + `","retention_seconds":1e40}`, 400, "invalid_json"},
		{"bucket: unknown member", "POST", "/v1/attachments/buckets", alice, `{"member_secret_hash":"` + h32 + `","admin_secret_hash":"` + h32b + `","owner":"x"}`, 400, "invalid_json"},
		{"upload: malformed bucket id", "POST", "/v1/attachments/buckets/..%2f..%2fetc/uploads", alice, `{"member_secret":"` + h32 + `","size":1}`, 422, "invalid_attachment_request"},
		{"upload: bucket id too long", "POST", "/v1/attachments/buckets/" + strings.Repeat("A", 23) + "/uploads", alice, `{"member_secret":"` + h32 + `","size":1}`, 422, "invalid_attachment_request"},
		{"upload: unknown bucket", "POST", "/v1/attachments/buckets/AAAAAAAAAAAAAAAAAAAAAA/uploads", alice, `{"member_secret":"` + h32 + `","size":1}`, 404, "attachment_not_found"},
		{"upload: short secret", "POST", "/v1/attachments/buckets/" + bkt.id + "/uploads", alice, `{"member_secret":"AAAA","size":1}`, 422, "invalid_attachment_request"},
		{"upload: negative size", "POST", "/v1/attachments/buckets/" + bkt.id + "/uploads", alice, `{"member_secret":"` + b64(bkt.member) + `","size":-5}`, 422, "invalid_attachment_request"},
		{"upload: huge size", "POST", "/v1/attachments/buckets/" + bkt.id + "/uploads", alice, `{"member_secret":"` + b64(bkt.member) + `","size":9223372036854775807}`, 413, "object_too_large"},
		{"upload: size as string", "POST", "/v1/attachments/buckets/" + bkt.id + "/uploads", alice, `{"member_secret":"` + b64(bkt.member) + `","size":"1"}`, 400, "invalid_json"},
		{"upload: no auth", "POST", "/v1/attachments/buckets/" + bkt.id + "/uploads", nil, `{"member_secret":"` + b64(bkt.member) + `","size":1}`, 401, "unauthorized"},
		{"download: traversal key", "POST", "/v1/attachments/buckets/" + bkt.id + "/downloads", alice, `{"member_secret":"` + b64(bkt.member) + `","object_key":"../../root.key"}`, 422, "invalid_attachment_request"},
		{"download: empty key", "POST", "/v1/attachments/buckets/" + bkt.id + "/downloads", alice, `{"member_secret":"` + b64(bkt.member) + `","object_key":""}`, 422, "invalid_attachment_request"},
		{"rotate: same as admin", "PUT", "/v1/attachments/buckets/" + bkt.id + "/member-secret", alice, `{"admin_secret":"` + b64(bkt.admin) + `","member_secret_hash":"` + hashOf(bkt.admin) + `"}`, 422, "invalid_attachment_request"},
		{"rotate: hash missing", "PUT", "/v1/attachments/buckets/" + bkt.id + "/member-secret", alice, `{"admin_secret":"` + b64(bkt.admin) + `"}`, 422, "invalid_attachment_request"},
		{"delete: no body", "POST", "/v1/attachments/buckets/" + bkt.id + "/delete", alice, ``, 400, "invalid_json"},
		{"delete: with DELETE", "DELETE", "/v1/attachments/buckets/" + bkt.id, alice, ``, 404, "not_found"},
		{"object: no signature", "GET", "/v1/attachments/objects/" + bkt.id + "/AAAAAAAAAAAAAAAAAAAAAA", nil, ``, 403, "invalid_object_url"},
		{"object: traversal", "GET", "/v1/attachments/objects/" + bkt.id + "/..%2f..%2froot.key?gen=0&expires=99999999999&sig=x", nil, ``, 403, "invalid_object_url"},
		{"object: PUT without signature", "PUT", "/v1/attachments/objects/" + bkt.id + "/AAAAAAAAAAAAAAAAAAAAAA?size=5", nil, `hello`, 403, "invalid_object_url"},
	}
	before := snapshot(t, e)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" || c.method == "POST" {
				body = c.body
			}
			e := *e
			e.t = t
			r := e.call(c.method, c.path, c.creds, body, false)
			if c.name == "upload: wrong content type" {
				r = e.rawCall(c.method, c.path, c.creds, c.body, "text/plain")
			}
			if r.Status != c.status || r.errCode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.Status, r.Raw, c.status, c.code)
			}
			errBody, _ := r.Body["error"].(map[string]any)
			if msg, _ := errBody["message"].(string); msg == "" || strings.Contains(msg, "sql") || strings.Contains(msg, "goroutine") {
				t.Errorf("error message missing or leaks internals: %q", msg)
			}
		})
	}
	if after := snapshot(t, e); after != before {
		t.Errorf("hostile requests changed stored state:\nbefore %s\nafter  %s", before, after)
	}
}

// rawCall sends body with an explicit content type.
func (e *env) rawCall(method, path string, c *creds, body, contentType string) response {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if c != nil {
		req.SetBasicAuth(c.Account+".1", c.Secret)
	}
	req.RequestURI = ""
	req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(e.srv.URL, "http://")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r response
	r.Status, r.Header = resp.StatusCode, resp.Header
	json.NewDecoder(resp.Body).Decode(&r.Body)
	return r
}

func sendTo(c *creds) string { return "/v1/messages/" + c.Account }

func sendBody(device, regID int, content string) string {
	return fmt.Sprintf(`{"timestamp":1,"messages":[{"device_id":%d,"registration_id":%d,"type":1,"content":%q}]}`, device, regID, content)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// snapshot summarises every table's contents.
func snapshot(t *testing.T, e *env) string {
	var sb strings.Builder
	for _, table := range e.db.Tables() {
		rows, err := e.db.DumpTable(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rows)
		sb.WriteString(table + ":" + string(b) + ";")
	}
	return sb.String()
}

// FuzzRequests throws arbitrary bodies at every JSON endpoint of a real
// relay (one per fuzz worker): no input may cause a 5xx or a panic, and every
// error is the standard JSON body.
func FuzzRequests(f *testing.F) {
	seeds := []string{`{"timestamp":1,"messages":[{"device_id":1,"registration_id":1,"type":1,"content":"aGk="}]}`, `{"number":"+442079460000"}`, `{"session_id":"a","code":"123456"}`, `{}`, `{"a":1,"a":2}`, `[`, `{"prekeys":[{"key_id":1,"public_key":"BQ=="}]}`}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	shared := newEnv(f)
	_, alice := shared.register(aliceNumber, 0)
	bkt := shared.newBucket(alice)
	endpoints := []struct{ method, path string }{
		{"POST", "/v1/verification/sessions"}, {"POST", "/v1/verification/sessions/status"},
		{"POST", "/v1/verification/sessions/code"}, {"PUT", "/v1/verification/sessions/code"},
		{"POST", "/v1/accounts"}, {"PUT", "/v1/keys"}, {"PUT", "/v1/accounts/me/registration-lock"},
		{"PUT", "/v1/messages/" + alice.Account}, {"POST", "/v1/directory"},
		{"POST", "/v1/devices/link"}, {"PUT", "/v1/provisioning/AAAAAAAAAAAAAAAAAAAAAA"}, {"PUT", "/v1/messages"},
		{"POST", "/v1/attachments/buckets"}, {"POST", "/v1/attachments/buckets/" + bkt.id + "/uploads"},
		{"POST", "/v1/attachments/buckets/" + bkt.id + "/downloads"}, {"PUT", "/v1/attachments/buckets/" + bkt.id + "/member-secret"},
		{"PUT", "/v1/attachments/buckets/" + bkt.id + "/retention"}, {"POST", "/v1/attachments/buckets/" + bkt.id + "/delete"},
		{"GET", "/v1/certificate/delivery"}, {"GET", "/v1/certificate/trust-root"},
		{"PUT", "/v1/accounts/me/unidentified-access"}, {"PUT", "/v1/devices/me/push"}, {"GET", "/v1/push"},
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		e := *shared
		e.t = t
		ep := endpoints[int(which)%len(endpoints)]
		var c *creds
		if ep.path == "/v1/keys" || strings.HasPrefix(ep.path, "/v1/accounts/me") || strings.HasPrefix(ep.path, "/v1/messages") || ep.path == "/v1/directory" ||
			strings.HasPrefix(ep.path, "/v1/attachments/") || strings.HasPrefix(ep.path, "/v1/provisioning/") || ep.path == "/v1/certificate/delivery" || ep.path == "/v1/devices/me/push" {
			c = alice
		}
		r := e.call(ep.method, ep.path, c, body, false)
		if r.Status >= 500 {
			t.Fatalf("%s %s with %q: %d", ep.method, ep.path, body, r.Status)
		}
		if r.Status >= 400 && r.errCode() == "" {
			t.Fatalf("%s %s with %q: %d without an error code: %s", ep.method, ep.path, body, r.Status, r.Raw)
		}
	})
}
