package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/push/apns"
)

// apnsServer checks what Apple documents for a token-authenticated
// background push and answers the statuses it is told.
type apnsServer struct {
	t       *testing.T
	key     *ecdsa.PublicKey
	keyID   string
	teamID  string
	mu      sync.Mutex
	answers []int
	paths   []string
}

func (a *apnsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := a.t
	body, _ := io.ReadAll(r.Body)
	problem := ""
	switch {
	case r.ProtoMajor != 2:
		problem = "not HTTP/2"
	case r.Method != "POST" || !strings.HasPrefix(r.URL.Path, "/3/device/"):
		problem = "path " + r.URL.Path
	case r.Header.Get("apns-topic") != "org.example.app":
		problem = "apns-topic " + r.Header.Get("apns-topic")
	case r.Header.Get("apns-push-type") != "background":
		problem = "apns-push-type " + r.Header.Get("apns-push-type")
	case r.Header.Get("apns-priority") != "5":
		problem = "apns-priority " + r.Header.Get("apns-priority")
	case string(body) != `{"aps":{"content-available":1}}`:
		problem = "payload " + string(body)
	}
	if err := a.checkJWT(strings.TrimPrefix(r.Header.Get("Authorization"), "bearer ")); err != nil {
		problem = "JWT: " + err.Error()
	}
	if problem != "" {
		t.Error(problem)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.paths = append(a.paths, r.URL.Path)
	status := http.StatusOK
	if len(a.answers) > 0 {
		status, a.answers = a.answers[0], a.answers[1:]
	}
	a.mu.Unlock()
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000001")
	w.WriteHeader(status)
	switch status {
	case http.StatusGone:
		io.WriteString(w, `{"reason":"Unregistered","timestamp":1700000000000}`)
	case http.StatusTooManyRequests:
		io.WriteString(w, `{"reason":"TooManyRequests"}`)
	}
}

// checkJWT verifies an ES256 provider token with the key's public half.
func (a *apnsServer) checkJWT(tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	var header struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(h, &header) != nil || json.Unmarshal(c, &claims) != nil {
		return errors.New("undecodable")
	}
	if header.Alg != "ES256" || header.Kid != a.keyID || claims.Iss != a.teamID || time.Since(time.Unix(claims.Iat, 0)) > time.Hour {
		return errors.New("header or claims " + string(h) + string(c))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return errors.New("signature encoding")
	}
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(a.key, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return errors.New("signature does not verify with the key")
	}
	return nil
}

// TestAPNs: apns2's client, as the relay configures it, sends what Apple
// documents; 410 means gone, 429 back off.
func TestAPNs(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p8 := filepath.Join(t.TempDir(), "AuthKey_ABC123DEFG.p8")
	os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	srv := &apnsServer{t: t, key: &key.PublicKey, keyID: "ABC123DEFG", teamID: "TEAM123456",
		answers: []int{http.StatusOK, http.StatusGone, http.StatusTooManyRequests}}
	hs := httptest.NewUnstartedServer(srv)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	defer hs.Close()
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	s, err := apns.New(apns.Config{KeyFile: p8, KeyID: "ABC123DEFG", TeamID: "TEAM123456", URL: hs.URL, RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	target := push.Target{Kind: push.APNs, Token: strings.Repeat("ab", 32), Topic: "org.example.app"}
	if err := target.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Push(ctx, target, true); err != nil {
		t.Fatalf("push: %v", err)
	}
	if err := s.Push(ctx, target, false); !errors.Is(err, push.ErrGone) {
		t.Errorf("410: %v", err)
	}
	var re *push.RetryError
	if err := s.Push(ctx, target, false); !errors.As(err, &re) {
		t.Errorf("429: %v", err)
	}
	if len(srv.paths) != 3 || srv.paths[0] != "/3/device/"+target.Token {
		t.Errorf("paths %v", srv.paths)
	}
	if _, err := apns.New(apns.Config{KeyFile: filepath.Join(t.TempDir(), "missing.p8"), KeyID: "A", TeamID: "B"}); err == nil {
		t.Error("a missing key file was accepted")
	}
}
