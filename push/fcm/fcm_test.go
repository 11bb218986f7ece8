package fcm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/push/fcm"
)

// fcmServer is a local OAuth 2 token endpoint and FCM HTTP v1 endpoint:
// the token request's JWT assertion must verify with the service
// account's public key, and sends must carry the token it issued.
type fcmServer struct {
	t       *testing.T
	key     *rsa.PublicKey
	email   string
	mu      sync.Mutex
	tokens  int
	answers []int
	sent    []map[string]any
}

func (f *fcmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := f.t
	switch r.URL.Path {
	case "/token":
		r.ParseForm()
		if err := f.checkAssertion(r.PostForm.Get("assertion"), "https://"+r.Host+"/token"); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			t.Errorf("token request: %v %v", err, r.PostForm)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.tokens++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"local-access-token","token_type":"Bearer","expires_in":3600}`)
	case "/v1/projects/parley-test/messages:send":
		if r.Header.Get("Authorization") != "Bearer local-access-token" {
			t.Errorf("send without the access token: %q", r.Header.Get("Authorization"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		f.mu.Lock()
		f.sent = append(f.sent, m)
		status := http.StatusOK
		if len(f.answers) > 0 {
			status, f.answers = f.answers[0], f.answers[1:]
		}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch status {
		case http.StatusNotFound:
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`)
		case http.StatusTooManyRequests:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"errorCode":"QUOTA_EXCEEDED"}]}}`)
		default:
			w.WriteHeader(status)
			io.WriteString(w, `{"name":"projects/parley-test/messages/1"}`)
		}
	default:
		t.Errorf("unexpected %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusNotFound)
	}
}

// checkAssertion verifies the RS256 JWT assertion of a service account.
func (f *fcmServer) checkAssertion(a, aud string) error {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(f.key, crypto.SHA256, d[:], sig); err != nil {
		return err
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct{ Iss, Scope, Aud string }
	json.Unmarshal(raw, &c)
	if c.Iss != f.email || c.Scope != fcm.Scope || c.Aud != aud {
		return errors.New("claims " + string(raw))
	}
	return nil
}

func TestFCM(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	srv := &fcmServer{t: t, key: &key.PublicKey, email: "push@parley-test.iam.gserviceaccount.com",
		answers: []int{http.StatusOK, http.StatusOK, http.StatusNotFound, http.StatusTooManyRequests, http.StatusInternalServerError}}
	hs := httptest.NewTLSServer(srv)
	defer hs.Close()
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "parley-test", "private_key_id": "k1",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "client_email": srv.email,
		"token_uri": hs.URL + "/token"})
	file := filepath.Join(t.TempDir(), "sa.json")
	os.WriteFile(file, sa, 0o600)
	s, err := fcm.New(fcm.Config{ServiceAccountFile: file, URL: hs.URL, Client: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	target := push.Target{Kind: push.FCM, Token: "fcm-registration-token-0123456789"}
	ctx := context.Background()
	if err := s.Push(ctx, target, true); err != nil {
		t.Fatalf("push: %v", err)
	}
	if err := s.Push(ctx, target, false); err != nil {
		t.Fatalf("second push: %v", err)
	}
	if err := s.Push(ctx, target, false); !errors.Is(err, push.ErrGone) {
		t.Errorf("UNREGISTERED: %v", err)
	}
	var re *push.RetryError
	if err := s.Push(ctx, target, false); !errors.As(err, &re) || re.After.Seconds() != 30 {
		t.Errorf("429: %v", err)
	}
	if err := s.Push(ctx, target, false); err == nil || errors.Is(err, push.ErrGone) {
		t.Errorf("500: %v", err)
	}
	if srv.tokens != 1 {
		t.Errorf("%d token requests, want 1 (the token is reused)", srv.tokens)
	}
	first, _ := json.Marshal(srv.sent[0])
	if !strings.Contains(string(first), `"data":{"parley":"wake"}`) || !strings.Contains(string(first), `"priority":"HIGH"`) ||
		strings.Contains(string(first), "notification") {
		t.Errorf("first message %s", first)
	}
	second, _ := json.Marshal(srv.sent[1])
	if !strings.Contains(string(second), `"priority":"NORMAL"`) {
		t.Errorf("second message %s", second)
	}
	// A file that is not a service account key is refused at start.
	os.WriteFile(file, []byte(`{"type":"authorized_user"}`), 0o600)
	if _, err := fcm.New(fcm.Config{ServiceAccountFile: file}); err == nil {
		t.Error("a user credential was taken for a service account")
	}
}
