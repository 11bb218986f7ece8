package main

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/store/postgres/pgtest"
)

// recordingPushService is a local Web Push service (TLS) that records
// every push it gets, with its headers and body, and answers 201.
type recordingPushService struct {
	srv    *httptest.Server
	caFile string // its certificate, for parleyd's SSL_CERT_FILE

	mu      sync.Mutex
	pushes  []recordedPush
	answers []int // statuses to answer, in turn (then 201)
}

type recordedPush struct {
	path   string
	header http.Header
	body   []byte
}

func newRecordingPushService(t *testing.T) *recordingPushService {
	t.Helper()
	p := &recordingPushService{}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.pushes = append(p.pushes, recordedPush{path: r.URL.Path, header: r.Header.Clone(), body: body})
		status := http.StatusCreated
		if len(p.answers) > 0 {
			status, p.answers = p.answers[0], p.answers[1:]
		}
		p.mu.Unlock()
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "120")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(p.srv.Close)
	p.caFile = filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.caFile, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *recordingPushService) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pushes)
}

// pushArgs makes a VAPID key file and returns the serve flags that turn
// Web Push on against local services.
func pushArgs(t *testing.T) []string {
	t.Helper()
	vapid := filepath.Join(t.TempDir(), "vapid.json")
	if out, err := exec.Command(binary, "webpush-keys", "--out", vapid).CombinedOutput(); err != nil {
		t.Fatalf("webpush-keys: %v\n%s", err, out)
	}
	return []string{"--webpush-vapid-file", vapid, "--webpush-subscriber", "mailto:ops@example.org",
		"--webpush-allow-private-endpoints", "--push-delay", "300ms", "--push-interval", "1m"}
}

// registerWebPush gives d a Web Push target at the service.
func registerWebPush(t *testing.T, p *proc, d device, svc *recordingPushService) {
	t.Helper()
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	rand.Read(auth)
	st, body := p.do("PUT", "/v1/devices/me/push", d.user, d.pass, map[string]any{"kind": "webpush",
		"endpoint": svc.srv.URL + "/push/" + d.account, "p256dh": b64(k.PublicKey().Bytes()), "auth": b64(auth)})
	if st != 204 {
		t.Fatalf("register push target: %d %v", st, body)
	}
}

func waitPushes(t *testing.T, svc *recordingPushService, want int) {
	t.Helper()
	waitCond(t, 10*time.Second, "pushes", func() bool { return svc.count() >= want })
	time.Sleep(1500 * time.Millisecond) // and no more come
	if n := svc.count(); n != want {
		t.Fatalf("%d pushes, want %d", n, want)
	}
}

// TestPushWakesOfflineDevice: a device offline with a Web Push target gets
// exactly one wake-up for a burst of messages, carrying nothing about them;
// none while its socket is live or within the interval.
func TestPushWakesOfflineDevice(t *testing.T) {
	svc := newRecordingPushService(t)
	p := start(t, []string{"SSL_CERT_FILE=" + svc.caFile}, append([]string{"--data-dir", t.TempDir(),
		"--test-number", "+12025550100=123456", "--test-number", "+12025550101=123456"}, pushArgs(t)...)...)
	alice, bob := registerDevice(t, p, "+12025550100"), registerDevice(t, p, "+12025550101")
	if st, body := p.do("GET", "/v1/push", "", "", nil); st != 200 || !strings.Contains(body["services"].([]any)[0].(string), "webpush") || body["vapid_public_key"] == "" {
		t.Fatalf("GET /v1/push: %d %v", st, body)
	}
	registerWebPush(t, p, bob, svc)
	var texts []string
	for i := range 3 {
		text := "secret message " + string(rune('a'+i))
		texts = append(texts, text)
		if st, err := sendText(p, alice, bob, text, "k"+strings.ReplaceAll(text, " ", "-")); st != 200 || err != nil {
			t.Fatalf("send: %d %v", st, err)
		}
	}
	waitPushes(t, svc, 1)
	got := svc.pushes[0]
	for _, bad := range append(texts, alice.account, "+12025550100") {
		if strings.Contains(string(got.body), bad) || strings.Contains(got.path, alice.account) {
			t.Errorf("the push carries %q", bad)
		}
		for k, v := range got.header {
			if strings.Contains(strings.Join(v, " "), bad) {
				t.Errorf("push header %s carries %q", k, bad)
			}
		}
	}
	if got.header.Get("Content-Encoding") != "aes128gcm" || !strings.HasPrefix(got.header.Get("Authorization"), "vapid t=") {
		t.Errorf("push headers %v", got.header)
	}
	// Woken, the device connects and drains; a message while it is live
	// pushes nothing, and within the interval nothing pushes again.
	ws, err := dialSocket(p, bob)
	if err != nil {
		t.Fatal(err)
	}
	r := received{ids: map[string]map[string]bool{}}
	go r.receive(ws)
	waitCond(t, 10*time.Second, "bob's queue", func() bool { return r.has(texts[2]) })
	sendText(p, alice, bob, "while connected", "k-live")
	waitCond(t, 10*time.Second, "the live message", func() bool { return r.has("while connected") })
	ws.Close()
	sendText(p, alice, bob, "within the interval", "k-interval")
	waitPushes(t, svc, 1)
}

// TestPushOnceAcrossReplicas: two replicas share the database; a burst of
// sends through both wakes the device once.
func TestPushOnceAcrossReplicas(t *testing.T) {
	svc := newRecordingPushService(t)
	dsn := pgtest.Database(t)
	secret := rootSecretFile(t)
	args := append([]string{"--database-url", dsn, "--secret-file", secret}, pushArgs(t)...)
	env := []string{testNumbers, "SSL_CERT_FILE=" + svc.caFile}
	a := start(t, env, args...)
	b := start(t, env, args...)
	alice, bob := registerDevice(t, a, "+15555550100"), registerDevice(t, a, "+15555550101")
	registerWebPush(t, b, bob, svc)
	var wg sync.WaitGroup
	for i, p := range []*proc{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendText(p, alice, bob, "to bob "+string(rune('a'+i)), "r"+string(rune('a'+i)))
		}()
	}
	wg.Wait()
	waitPushes(t, svc, 1)
}

// TestPushAPNsAndFCM: parleyd wakes an iOS device through APNs and an
// Android device through FCM (local servers standing in for Apple's and
// Google's, reached over HTTP/2 TLS), one push each, with nothing about
// the message.
func TestPushAPNsAndFCM(t *testing.T) {
	var mu sync.Mutex
	var seen []recordedPush
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"local-token","token_type":"Bearer","expires_in":3600}`)
			return
		}
		mu.Lock()
		seen = append(seen, recordedPush{path: r.URL.Path, header: r.Header.Clone(), body: body})
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
		if strings.Contains(r.URL.Path, "messages:send") {
			io.WriteString(w, `{"name":"projects/parley-test/messages/1"}`)
		}
	}))
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o644)
	// An APNs .p8 key and an FCM service account of our own.
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	p8 := filepath.Join(dir, "AuthKey.p8")
	os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ = x509.MarshalPKCS8PrivateKey(rsaKey)
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "parley-test", "client_email": "push@parley-test.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "token_uri": hs.URL + "/token"})
	saFile := filepath.Join(dir, "sa.json")
	os.WriteFile(saFile, sa, 0o600)

	p := start(t, []string{"SSL_CERT_FILE=" + ca}, "--data-dir", t.TempDir(), "--test-number", "+12025550100=123456",
		"--test-number", "+12025550101=123456", "--test-number", "+12025550102=123456", "--push-delay", "300ms",
		"--apns-key-file", p8, "--apns-key-id", "ABC123DEFG", "--apns-team-id", "TEAM123456", "--apns-topic", "org.example.app", "--apns-url", hs.URL,
		"--fcm-service-account-file", saFile, "--fcm-url", hs.URL)
	alice, phone, android := registerDevice(t, p, "+12025550100"), registerDevice(t, p, "+12025550101"), registerDevice(t, p, "+12025550102")
	apnsToken := strings.Repeat("ab", 32)
	if st, body := p.do("PUT", "/v1/devices/me/push", phone.user, phone.pass, map[string]any{"kind": "apns", "token": apnsToken, "topic": "org.example.app"}); st != 204 {
		t.Fatalf("apns target: %d %v", st, body)
	}
	if st, body := p.do("PUT", "/v1/devices/me/push", android.user, android.pass, map[string]any{"kind": "fcm", "token": "fcm-registration-token-0123456789"}); st != 204 {
		t.Fatalf("fcm target: %d %v", st, body)
	}
	for i := range 2 {
		sendText(p, alice, phone, "for the phone", "ph"+string(rune('a'+i)))
		sendText(p, alice, android, "for the android", "an"+string(rune('a'+i)))
	}
	waitCond(t, 10*time.Second, "two pushes", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= 2 })
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("%d pushes, want 2: %+v", len(seen), seen)
	}
	var apnsSeen, fcmSeen bool
	for _, s := range seen {
		switch {
		case s.path == "/3/device/"+apnsToken:
			apnsSeen = s.header.Get("apns-push-type") == "background" && string(s.body) == `{"aps":{"content-available":1}}`
		case s.path == "/v1/projects/parley-test/messages:send":
			fcmSeen = strings.Contains(string(s.body), `"data":{"parley":"wake"}`) && s.header.Get("Authorization") == "Bearer local-token"
		}
		if strings.Contains(string(s.body), "for the") || strings.Contains(string(s.body), alice.account) {
			t.Errorf("a push carries the message or its sender: %s", s.body)
		}
	}
	if !apnsSeen || !fcmSeen {
		t.Errorf("pushes %+v", seen)
	}
}

// TestPushBacksOff: a Web Push service that answers 429 with Retry-After
// is not pushed to again before then, though the interval has passed.
func TestPushBacksOff(t *testing.T) {
	svc := newRecordingPushService(t)
	svc.answers = []int{http.StatusTooManyRequests}
	p := start(t, []string{"SSL_CERT_FILE=" + svc.caFile}, append([]string{"--data-dir", t.TempDir(),
		"--test-number", "+12025550100=123456", "--test-number", "+12025550101=123456"}, append(pushArgs(t), "--push-interval", "1s")...)...)
	alice, bob := registerDevice(t, p, "+12025550100"), registerDevice(t, p, "+12025550101")
	registerWebPush(t, p, bob, svc)
	sendText(p, alice, bob, "first", "b1")
	waitPushes(t, svc, 1)
	time.Sleep(1200 * time.Millisecond) // past the interval, not the back-off
	sendText(p, alice, bob, "second", "b2")
	waitPushes(t, svc, 1)
}

// TestPushGoneTargetDeleted: a Web Push service that answers 410 gets its
// subscription deleted: the device is not pushed again, and the metrics
// say so.
func TestPushGoneTargetDeleted(t *testing.T) {
	svc := newRecordingPushService(t)
	svc.answers = []int{http.StatusGone}
	p := start(t, []string{"SSL_CERT_FILE=" + svc.caFile}, append([]string{"--data-dir", t.TempDir(),
		"--test-number", "+12025550100=123456", "--test-number", "+12025550101=123456"}, append(pushArgs(t), "--push-interval", "1s")...)...)
	alice, bob := registerDevice(t, p, "+12025550100"), registerDevice(t, p, "+12025550101")
	registerWebPush(t, p, bob, svc)
	sendText(p, alice, bob, "first", "g1")
	waitPushes(t, svc, 1)
	time.Sleep(1200 * time.Millisecond) // past the interval
	sendText(p, alice, bob, "second", "g2")
	waitPushes(t, svc, 1) // the target is gone: no second push
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `parley_push_targets_deleted_total{kind="webpush"} 1`) {
		t.Errorf("metrics lack the deleted target:\n%s", grep(string(m), "parley_push"))
	}
}
