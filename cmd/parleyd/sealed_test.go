package main

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/libsignalpeer"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// sealedRequest sends a request with an Unidentified-Access-Key (nil: no
// header) and, if from is set, device credentials too; it returns the
// status and the decoded body.
func sealedRequest(t *testing.T, p *proc, method, path string, key []byte, from *device, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, p.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if key != nil {
		req.Header.Set("Unidentified-Access-Key", base64.StdEncoding.EncodeToString(key))
	}
	if from != nil {
		req.SetBasicAuth(from.user, from.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func sealedBody(typ int, regID int, content []byte) []byte {
	b, _ := json.Marshal(map[string]any{"timestamp": 1_700_000_000_000, "messages": []any{map[string]any{
		"device_id": 1, "registration_id": regID, "type": typ, "content": base64.StdEncoding.EncodeToString(content)}}})
	return b
}

func setAccessKey(t *testing.T, p *proc, d device, key []byte, unrestricted bool) {
	t.Helper()
	body := map[string]any{"unrestricted": unrestricted, "unidentified_access_key": nil}
	if key != nil {
		body["unidentified_access_key"] = base64.StdEncoding.EncodeToString(key)
	}
	if st, out := p.do("PUT", "/v1/accounts/me/unidentified-access", d.user, d.pass, body); st != 204 {
		t.Fatalf("set unidentified access: %d %v", st, out)
	}
}

// queued drains d's socket and returns the envelopes waiting for it.
func queued(t *testing.T, p *proc, d device) []wire.Envelope {
	t.Helper()
	ws, err := dialSocket(p, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var out []wire.Envelope
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, raw, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("reading %s's queue: %v", d.account, err)
		}
		var f wire.Frame
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case wire.FrameQueueEmpty:
			return out
		case wire.FrameEnvelope:
			e := *f.Envelope
			out = append(out, e)
			ack, _ := json.Marshal(wire.Frame{Type: wire.FrameAck, IDs: []uuid.UUID{e.ID}})
			ws.WriteMessage(websocket.TextMessage, ack)
		}
	}
}

// TestSealedSendsForbiddenPaths: a sealed send needs the destination's
// unidentified-access key; every wrong way in answers the same 401 and
// stores nothing, and what is stored carries no source.
func TestSealedSendsForbiddenPaths(t *testing.T) {
	p := start(t, nil, "--data-dir", t.TempDir(), "--test-number", "+12025550100=123456", "--test-number", "+12025550101=123456",
		"--test-number", "+12025550102=123456")
	alice, bob, carol := registerDevice(t, p, "+12025550100"), registerDevice(t, p, "+12025550101"), registerDevice(t, p, "+12025550102")
	bobKey, carolKey := make([]byte, 16), make([]byte, 16)
	rand.Read(bobKey)
	rand.Read(carolKey)
	setAccessKey(t, p, bob, bobKey, false)
	setAccessKey(t, p, carol, carolKey, false)
	wrong := append([]byte(nil), bobKey...)
	wrong[15] ^= 1
	const jsonType = "application/json"
	sealed := sealedBody(6, 77, []byte("sealed ciphertext"))

	var first map[string]any
	for _, c := range []struct {
		name string
		path string
		key  []byte
	}{
		{"wrong key", "/v1/messages/" + bob.account, wrong},
		{"another account's key", "/v1/messages/" + bob.account, carolKey},
		{"empty key", "/v1/messages/" + bob.account, []byte{}},
		{"unknown account", "/v1/messages/" + uuid.NewString(), bobKey},
	} {
		st, body := sealedRequest(t, p, "PUT", c.path, c.key, nil, jsonType, sealed)
		if st != 401 {
			t.Errorf("%s: %d %v, want 401", c.name, st, body)
		}
		if first == nil {
			first = body
		} else if !jsonEqual(first, body) {
			t.Errorf("%s: answer %v differs from %v", c.name, body, first)
		}
	}
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+bob.account, nil, nil, jsonType, sealed); st != 401 {
		t.Errorf("no key, no credentials: %d %v", st, body)
	}
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+bob.account, bobKey, &alice, jsonType, sealed); st != 400 {
		t.Errorf("key and credentials: %d %v", st, body)
	}
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+bob.account, bobKey, nil, jsonType, sealedBody(1, 77, []byte("x"))); st != 422 {
		t.Errorf("sealed send of an identified type: %d %v", st, body)
	}
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+bob.account, nil, &alice, jsonType, sealed); st != 422 {
		t.Errorf("identified send of the sealed type: %d %v", st, body)
	}
	if st, body := p.do("PUT", "/v1/accounts/me/unidentified-access", bob.user, bob.pass, map[string]any{"unidentified_access_key": b64(make([]byte, 15))}); st != 422 {
		t.Errorf("a 15-byte key: %d %v", st, body)
	}
	if got := queued(t, p, bob); len(got) != 0 {
		t.Fatalf("refused sends stored %d envelopes", len(got))
	}

	// The right key: stored with no source, delivered as type 6.
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+bob.account, bobKey, nil, jsonType, sealed); st != 200 {
		t.Fatalf("sealed send: %d %v", st, body)
	}
	got := queued(t, p, bob)
	if len(got) != 1 || got[0].Type != 6 || got[0].SourceAccount != uuid.Nil || got[0].SourceDevice != 0 || string(got[0].Content) != "sealed ciphertext" {
		t.Fatalf("delivered %+v", got)
	}
	// Unrestricted access admits any key; taking the key away refuses it.
	setAccessKey(t, p, carol, nil, true)
	if st, body := sealedRequest(t, p, "PUT", "/v1/messages/"+carol.account, wrong, nil, jsonType, sealed); st != 200 {
		t.Errorf("unrestricted: %d %v", st, body)
	}
	setAccessKey(t, p, carol, nil, false)
	if st, _ := sealedRequest(t, p, "PUT", "/v1/messages/"+carol.account, carolKey, nil, jsonType, sealed); st != 401 {
		t.Errorf("after the key was removed: %d", st)
	}
}

func jsonEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// officialDevice is an official libsignal client registered on parleyd.
type officialDevice struct {
	device
	client string
	keys   *libsignalpeer.KeyMaterial
	access []byte
}

func registerOfficial(t *testing.T, p *proc, peer *libsignalpeer.Peer, number string) officialDevice {
	t.Helper()
	client := uuid.NewString()
	if _, err := peer.NewClientWith(client, libsignalpeer.ClientOptions{RegistrationID: 1000, DeviceID: 1}); err != nil {
		t.Fatal(err)
	}
	k, err := peer.GenerateKeys(client, 2)
	if err != nil {
		t.Fatal(err)
	}
	st, body := p.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": number})
	if st != 200 {
		t.Fatalf("start verification: %d %v", st, body)
	}
	sid := body["session_id"].(string)
	if st, body = p.do("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": sid, "code": "123456"}); st != 200 {
		t.Fatalf("check code: %d %v", st, body)
	}
	secretBytes := make([]byte, 32)
	rand.Read(secretBytes)
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	reg := map[string]any{"session_id": sid, "credential": secret, "registration_id": k.RegistrationID, "identity_key": b64(k.IdentityKey),
		"signed_prekey":         map[string]any{"key_id": k.SignedPreKey.ID, "public_key": b64(k.SignedPreKey.PublicKey), "signature": b64(k.SignedPreKey.Signature)},
		"pq_last_resort_prekey": map[string]any{"key_id": k.LastResortKyberPreKey.ID, "public_key": b64(k.LastResortKyberPreKey.PublicKey), "signature": b64(k.LastResortKyberPreKey.Signature)},
	}
	if st, body = p.do("POST", "/v1/accounts", "", "", reg); st != 200 {
		t.Fatalf("register: %d %v", st, body)
	}
	account := body["account_id"].(string)
	if err := peer.SetAddressName(client, account); err != nil {
		t.Fatal(err)
	}
	o := officialDevice{device: device{user: account + ".1", pass: secret, account: account}, client: client, keys: k, access: make([]byte, 16)}
	rand.Read(o.access)
	setAccessKey(t, p, o.device, o.access, false)
	return o
}

// TestOfficialMultiRecipientSealedSend: official libsignal encrypts a
// group message once for two recipients (sealed sender v2); parleyd's
// multi-recipient endpoint admits it by the XOR of their access keys,
// stores each recipient's copy without a source, and each official
// recipient unseals and decrypts it.
func TestOfficialMultiRecipientSealedSend(t *testing.T) {
	peer := libsignalpeer.Start(t)
	p := start(t, nil, "--data-dir", t.TempDir(), "--test-number", "+12025550100=123456", "--test-number", "+12025550101=123456",
		"--test-number", "+12025550102=123456")
	alice := registerOfficial(t, p, peer, "+12025550100")
	members := []officialDevice{registerOfficial(t, p, peer, "+12025550101"), registerOfficial(t, p, peer, "+12025550102")}
	addr := func(o officialDevice) libsignalpeer.Address {
		return libsignalpeer.Address{Name: o.account, DeviceID: 1}
	}

	dist := uuid.NewString()
	skdm, err := peer.CreateDistribution(alice.client, addr(alice), dist)
	if err != nil {
		t.Fatal(err)
	}
	combined := make([]byte, 16)
	var recipients []libsignalpeer.Address
	for _, m := range members {
		if err := peer.ProcessBundle(alice.client, addr(m), m.keys.Bundle(0, -1)); err != nil {
			t.Fatal(err)
		}
		if err := peer.ProcessDistribution(m.client, addr(alice), skdm); err != nil {
			t.Fatal(err)
		}
		subtle.XORBytes(combined, combined, m.access)
		recipients = append(recipients, addr(m))
	}
	root, _ := protocol.GenerateKeyPair(rand.Reader)
	server, _ := protocol.GenerateKeyPair(rand.Reader)
	sc, _ := protocol.NewServerCertificate(rand.Reader, 1, server.Public, root.Private)
	aliceKey, _ := protocol.ParsePublicKey(alice.keys.IdentityKey)
	cert, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: alice.account, SenderDevice: 1,
		Expires: time.Now().Add(time.Hour), IdentityKey: aliceKey, Signer: sc}, server.Private)
	if err != nil {
		t.Fatal(err)
	}
	body, err := peer.MultiRecipientEncrypt(alice.client, libsignalpeer.MultiRecipientInput{Recipients: recipients,
		SenderCertificate: cert.Bytes(), DistributionID: dist, Plaintext: []byte("sealed to the group"),
		ContentHint: libsignalpeer.ContentHintResendable})
	if err != nil {
		t.Fatal(err)
	}
	const mrm = "application/vnd.signal-messenger.mrm"
	path := "/v1/messages/multi_recipient?ts=1700000000000&urgent=true"
	wrong := append([]byte(nil), combined...)
	wrong[0] ^= 1
	if st, out := sealedRequest(t, p, "PUT", path, wrong, nil, mrm, body); st != 401 {
		t.Errorf("wrong combined key: %d %v", st, out)
	}
	if st, out := sealedRequest(t, p, "PUT", path, members[0].access, nil, mrm, body); st != 401 {
		t.Errorf("one member's key only: %d %v", st, out)
	}
	if st, out := sealedRequest(t, p, "PUT", path, combined, nil, mrm, body[:30]); st != 400 {
		t.Errorf("message cut inside its recipient list: %d %v", st, out)
	}
	if st, out := sealedRequest(t, p, "PUT", path, combined, nil, "application/json", body); st != 415 {
		t.Errorf("wrong media type: %d %v", st, out)
	}
	if st, out := sealedRequest(t, p, "PUT", path, combined, nil, mrm, body); st != 200 {
		t.Fatalf("multi-recipient sealed send: %d %v", st, out)
	}
	for i, m := range members {
		got := queued(t, p, m.device)
		if len(got) != 1 || got[0].Type != 6 || got[0].SourceAccount != uuid.Nil || got[0].Timestamp != 1700000000000 {
			t.Fatalf("member %d got %+v", i, got)
		}
		u, err := peer.SealedDecryptToUSMC(m.client, got[0].Content)
		if err != nil {
			t.Fatalf("member %d unseal: %v", i, err)
		}
		plain, err := peer.GroupDecrypt(m.client, addr(alice), u.Contents)
		if err != nil || string(plain) != "sealed to the group" {
			t.Fatalf("member %d: %q %v", i, plain, err)
		}
	}
}
