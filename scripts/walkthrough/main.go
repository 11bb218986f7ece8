// Command walkthrough runs the README's walk-through against a running
// parleyd: it verifies two test numbers, registers two accounts with real
// Signal key material, has one fetch the other's prekey bundle, and prints
// every request and answer.
//
//	go run ./scripts/walkthrough [-server http://127.0.0.1:8080]
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "relay URL")
	// Not the README's chat numbers (…0100, …0101): registering those again
	// here would log out the accounts made with parley.
	a := flag.String("alice", "+15555550102", "first test number")
	b := flag.String("bob", "+15555550103", "second test number")
	code := flag.String("code", "123456", "the test numbers' code")
	flag.Parse()
	w := &walk{server: *server}
	aliceUser, aliceSecret := w.register("Alice", *a, *code)
	bobUser, bobSecret := w.register("Bob", *b, *code)
	alice := aliceUser[:len(aliceUser)-2]
	bob := bobUser[:len(bobUser)-2]
	fmt.Println("\n## Bob fetches Alice's prekey bundle (claims one one-time prekey)")
	w.call("GET", "/v1/keys/"+alice+"/*", bobUser, bobSecret, nil)
	fmt.Println("\n## Alice counts her remaining one-time prekeys")
	w.call("GET", "/v1/keys/count", aliceUser, aliceSecret, nil)
	fmt.Println("\n## Alice fetches Bob's bundle and sends him an envelope (a real client would encrypt with PQXDH and the Double Ratchet first)")
	bundle := w.call("GET", "/v1/keys/"+bob+"/*", aliceUser, aliceSecret, nil)
	dev := bundle["devices"].([]any)[0].(map[string]any)
	w.call("PUT", "/v1/messages/"+bob, aliceUser, aliceSecret, map[string]any{
		"timestamp": time.Now().UnixMilli(),
		"messages": []any{map[string]any{"device_id": dev["device_id"], "registration_id": dev["registration_id"],
			"type": 3, "content": b64([]byte("stand-in for a PreKeySignalMessage"))}},
	})
	fmt.Println("\n## Bob connects his WebSocket, receives the envelope and acknowledges it")
	w.receive(bobUser, bobSecret)
	fmt.Println("\nDone. Alice authenticates as", aliceUser, "and Bob as", bobUser, "(HTTP Basic, password = credential).")
}

type walk struct{ server string }

// receive opens the device's WebSocket, prints frames up to queue_empty and
// acknowledges the envelopes.
func (w *walk) receive(user, pass string) {
	h := http.Header{}
	h.Set("Authorization", "Basic "+b64([]byte(user+":"+pass)))
	url := "ws" + strings.TrimPrefix(w.server, "http") + "/v1/websocket"
	fmt.Printf("$ websocket %s (Basic %s:…)\n", url, user)
	ws, _, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		fail(err)
	}
	defer ws.Close()
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			fail(err)
		}
		fmt.Printf("← %s\n", frame)
		var f struct {
			Type     string `json:"type"`
			Envelope struct {
				ID string `json:"id"`
			} `json:"envelope"`
		}
		if err := json.Unmarshal(frame, &f); err != nil {
			fail(err)
		}
		if f.Type == "queue_empty" {
			return
		}
		ack := fmt.Sprintf(`{"type":"ack","ids":[%q]}`, f.Envelope.ID)
		fmt.Printf("→ %s\n", ack)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(ack)); err != nil {
			fail(err)
		}
	}
}

func (w *walk) call(method, path, user, pass string, body any) map[string]any {
	var rd io.Reader
	shown := ""
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
		shown = string(b)
		if len(shown) > 160 {
			shown = shown[:160] + "…"
		}
	}
	req, err := http.NewRequest(method, w.server+path, rd)
	if err != nil {
		fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	auth := ""
	if user != "" {
		req.SetBasicAuth(user, pass)
		auth = " -u " + user + ":…"
	}
	fmt.Printf("$ curl -X %s%s %s%s %s\n", method, auth, w.server, path, shown)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fail(fmt.Errorf("is parleyd running (make run)? %w", err))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	s := string(out)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	fmt.Printf("→ %d %s\n", resp.StatusCode, s)
	if resp.StatusCode >= 300 {
		fail(fmt.Errorf("%s %s answered %d", method, path, resp.StatusCode))
	}
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	return m
}

func (w *walk) register(name, number, code string) (user, secret string) {
	fmt.Printf("\n## %s verifies %s\n", name, number)
	s := w.call("POST", "/v1/verification/sessions", "", "", map[string]any{"number": number})
	sid, _ := s["session_id"].(string)
	w.call("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": sid, "code": code})
	fmt.Printf("\n## %s registers with fresh keys\n", name)
	body, secret := registration(sid)
	r := w.call("POST", "/v1/accounts", "", "", body)
	id, _ := r["account_id"].(string)
	return id + ".1", secret
}

var b64 = base64.StdEncoding.EncodeToString

// registration builds a registration body as a client would: an identity
// key pair, a signed prekey, a signed Kyber1024 last-resort key and 5
// one-time prekeys, plus a random device credential.
func registration(session string) (map[string]any, string) {
	id := must(protocol.GenerateKeyPair(rand.Reader))
	spk := must(protocol.GenerateKeyPair(rand.Reader))
	sig := xeddsaSign(id.Private, spk.Public.Bytes())
	kem, err := protocol.GenerateKEMKeyPair(rand.Reader)
	if err != nil {
		panic(err)
	}
	pq := kem.Public.Bytes()
	pqsig := xeddsaSign(id.Private, pq)
	var pre []any
	for i := 1; i <= 5; i++ {
		k := must(protocol.GenerateKeyPair(rand.Reader))
		pre = append(pre, map[string]any{"key_id": i, "public_key": b64(k.Public.Bytes())})
	}
	cred := make([]byte, 32)
	rand.Read(cred)
	secret := base64.RawURLEncoding.EncodeToString(cred)
	return map[string]any{
		"session_id": session, "credential": secret, "registration_id": 1 + int(cred[0])<<4 | int(cred[1]&0xf),
		"identity_key":          b64(id.Public.Bytes()),
		"signed_prekey":         map[string]any{"key_id": 1, "public_key": b64(spk.Public.Bytes()), "signature": b64(sig)},
		"pq_last_resort_prekey": map[string]any{"key_id": 1, "public_key": b64(pq), "signature": b64(pqsig)},
		"prekeys":               pre,
	}, secret
}

func must[T any](v T, err error) T {
	if err != nil {
		fail(err)
	}
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "walkthrough:", err)
	os.Exit(1)
}

// xeddsaSign signs msg as a client signs its prekeys.
func xeddsaSign(k protocol.PrivateKey, msg []byte) []byte {
	sig, err := k.Sign(rand.Reader, msg)
	if err != nil {
		panic(err)
	}
	return sig
}
