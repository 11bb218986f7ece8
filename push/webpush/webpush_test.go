package webpush_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/push/webpush"
)

// pushService is a local Web Push endpoint that checks what RFC 8030,
// 8291 and 8292 require of a request and answers the statuses it is told.
type pushService struct {
	t        *testing.T
	vapid    []byte // the relay's VAPID public key (65 bytes)
	receiver *ecdh.PrivateKey
	auth     []byte

	mu       sync.Mutex
	answers  []int
	requests []string // the decrypted payloads, in order
	urgency  []string
}

func (p *pushService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.t
	body, _ := io.ReadAll(r.Body)
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		http.Error(w, "bad request", http.StatusBadRequest)
	}
	if r.Method != "POST" || r.Header.Get("Content-Encoding") != "aes128gcm" || r.Header.Get("TTL") == "" {
		fail("method %s, Content-Encoding %q, TTL %q", r.Method, r.Header.Get("Content-Encoding"), r.Header.Get("TTL"))
		return
	}
	if err := p.checkVAPID(r.Header.Get("Authorization"), "https://"+r.Host); err != nil {
		fail("VAPID: %v", err)
		return
	}
	plain, err := decryptWithHTTPECE(t, body, p.receiver.Bytes(), p.auth)
	if err != nil {
		fail("http_ece could not decrypt the payload: %v", err)
		return
	}
	p.mu.Lock()
	p.requests = append(p.requests, string(plain))
	p.urgency = append(p.urgency, r.Header.Get("Urgency"))
	status := http.StatusCreated
	if len(p.answers) > 0 {
		status, p.answers = p.answers[0], p.answers[1:]
	}
	p.mu.Unlock()
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "120")
	}
	w.WriteHeader(status)
}

// checkVAPID verifies the "vapid t=JWT, k=KEY" header: k is the relay's
// key, the JWT is ES256 over it with the endpoint's origin as audience, a
// future expiry and a subject.
func (p *pushService) checkVAPID(h, origin string) error {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return errors.New("not a vapid authorization")
	}
	var token, key string
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "t="); ok {
			token = v
		} else if v, ok := strings.CutPrefix(part, "k="); ok {
			key = v
		}
	}
	k, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil || !bytes.Equal(k, p.vapid) {
		return errors.New("k is not the relay's VAPID key")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return errors.New("not an ES256 signature")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), k)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return errors.New("the JWT's signature does not verify with k")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Aud != origin || claims.Exp <= time.Now().Unix() ||
		claims.Exp > time.Now().Add(24*time.Hour).Unix() || claims.Sub != "mailto:ops@example.org" {
		return errors.New("claims " + string(raw))
	}
	return nil
}

// decryptWithHTTPECE decrypts an aes128gcm body as a receiving client,
// with Mozilla's http_ece run by Node.
func decryptWithHTTPECE(t *testing.T, body, privateKey, auth []byte) ([]byte, error) {
	modules := os.Getenv("PARLEY_HTTP_ECE_NODE_MODULES")
	in, _ := json.Marshal(map[string][]byte{"body": body, "privateKey": privateKey, "authSecret": auth})
	c := exec.Command("node", "testdata/decrypt.cjs")
	c.Env = append(os.Environ(), "NODE_PATH="+modules)
	c.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, errors.New(err.Error() + ": " + stderr.String())
	}
	var r struct{ Plaintext []byte }
	return r.Plaintext, json.Unmarshal(out, &r)
}

// TestWebPush: the relay's wake-up is a real RFC 8291 ciphertext that an
// independent implementation decrypts to the fixed content-free payload,
// with a VAPID token that verifies against the relay's key; 404/410 mean
// gone, 429 a back-off with the service's Retry-After.
func TestWebPush(t *testing.T) {
	if os.Getenv("PARLEY_HTTP_ECE_NODE_MODULES") == "" {
		if os.Getenv("PARLEY_HTTP_ECE_REQUIRED") != "" {
			t.Fatal("PARLEY_HTTP_ECE_NODE_MODULES is not set (scripts/with-http-ece sets it)")
		}
		t.Skip("http_ece not installed: run through scripts/with-http-ece (make test does)")
	}
	keys, err := webpush.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	vapid, _ := base64.RawURLEncoding.DecodeString(keys.PublicKey)
	receiver, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	rand.Read(auth)
	svc := &pushService{t: t, vapid: vapid, receiver: receiver, auth: auth,
		answers: []int{http.StatusCreated, http.StatusCreated, http.StatusGone, http.StatusNotFound, http.StatusTooManyRequests, http.StatusInternalServerError}}
	srv := httptest.NewTLSServer(svc)
	defer srv.Close()
	s, err := webpush.New(webpush.Config{Keys: keys, Subscriber: "mailto:ops@example.org", Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	target := push.Target{Kind: push.WebPush, Endpoint: srv.URL + "/push/abc", P256DH: receiver.PublicKey().Bytes(), Auth: auth}
	if err := target.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Push(ctx, target, true); err != nil {
		t.Fatalf("first push: %v", err)
	}
	if err := s.Push(ctx, target, false); err != nil {
		t.Fatalf("second push: %v", err)
	}
	for _, want := range []string{"gone (410)", "gone (404)"} {
		if err := s.Push(ctx, target, false); !errors.Is(err, push.ErrGone) {
			t.Errorf("%s: %v", want, err)
		}
	}
	var re *push.RetryError
	if err := s.Push(ctx, target, false); !errors.As(err, &re) || re.After != 2*time.Minute {
		t.Errorf("429: %v", err)
	}
	if err := s.Push(ctx, target, false); err == nil || errors.Is(err, push.ErrGone) {
		t.Errorf("500: %v", err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	for i, p := range svc.requests {
		if p != string(webpush.Payload) {
			t.Errorf("push %d decrypted to %q, want the fixed wake-up", i, p)
		}
	}
	if len(svc.urgency) < 2 || svc.urgency[0] != "high" || svc.urgency[1] != "normal" {
		t.Errorf("urgency headers %v", svc.urgency)
	}
}

// A client-given endpoint cannot make the relay reach its own network.
func TestWebPushRefusesLocalEndpoints(t *testing.T) {
	keys, _ := webpush.GenerateKeys()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the relay reached a loopback endpoint")
	}))
	defer srv.Close()
	s, err := webpush.New(webpush.Config{Keys: keys, Subscriber: "mailto:ops@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	receiver, _ := ecdh.P256().GenerateKey(rand.Reader)
	target := push.Target{Kind: push.WebPush, Endpoint: srv.URL, P256DH: receiver.PublicKey().Bytes(), Auth: make([]byte, 16)}
	err = s.Push(context.Background(), target, false)
	if err == nil || !strings.Contains(err.Error(), "local or private address") {
		t.Fatalf("push to loopback: %v", err)
	}
	if strings.Contains(err.Error(), srv.URL) {
		t.Errorf("the error names the endpoint, which would reach the logs: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	keys, _ := webpush.GenerateKeys()
	path := t.TempDir() + "/vapid.json"
	b, _ := json.Marshal(keys)
	os.WriteFile(path, b, 0o644)
	if _, err := webpush.LoadKeys(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key file: %v", err)
	}
	os.Chmod(path, 0o600)
	if got, err := webpush.LoadKeys(path); err != nil || got != keys {
		t.Errorf("load: %+v %v", got, err)
	}
	other, _ := webpush.GenerateKeys()
	b, _ = json.Marshal(webpush.Keys{PublicKey: other.PublicKey, PrivateKey: keys.PrivateKey})
	os.WriteFile(path, b, 0o600)
	if _, err := webpush.LoadKeys(path); err == nil {
		t.Error("a file whose public key is another's was accepted")
	}
}

// The address guard lets only the public internet through, IPv4 inside
// IPv6 included.
func TestPublicAddresses(t *testing.T) {
	for addr, public := range map[string]bool{
		"93.184.216.34:443": true, "[2606:2800:220:1:248:1893:25c8:1946]:443": true, "[64:ff9b::5db8:d822]:443": true,
		"127.0.0.1:443": false, "10.1.2.3:443": false, "100.100.100.200:80": false, "169.254.169.254:80": false,
		"192.168.1.1:443": false, "198.18.0.1:443": false, "240.0.0.1:443": false, "0.0.0.0:443": false,
		"[::1]:443": false, "[::ffff:127.0.0.1]:443": false, "[::ffff:10.0.0.1]:443": false, "[64:ff9b::a00:1]:443": false,
		"[fd00::1]:443": false, "[fe80::1]:443": false, "[2002:c0a8:101::1]:443": false, "[fec0::1]:443": false,
	} {
		err := webpush.RefusePrivateForTest(addr)
		if (err == nil) != public {
			t.Errorf("%s: %v, want public %v", addr, err, public)
		}
	}
}
