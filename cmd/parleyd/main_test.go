package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/store/postgres/pgtest"
	"github.com/parleyhq/parley/verify/twilio/twiliotest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parleyd-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "parleyd")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running parleyd process.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	base    string
	metrics string
	logs    *logBuffer
	done    chan error
}

// logBuffer collects a process's log lines; the test reads it while the
// reader goroutine writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

// Write makes a logBuffer a process's Stdout or Stderr.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.WriteString(string(p))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listenLine = regexp.MustCompile(`"msg":"(parleyd|metrics) listening","addr":"([^"]+)"`)

// start runs parleyd serve with args and env and waits until it listens.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBinary(t, binary, env, args...)
}

// startBinary is start with another parleyd binary (an older release).
func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &proc{t: t, cmd: cmd, logs: &logBuffer{}, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			r.logs.WriteString(line + "\n")
			if m := listenLine.FindStringSubmatch(line); m != nil {
				if m[1] == "metrics" {
					r.metrics = "http://" + m[2]
				} else {
					r.base = "http://" + m[2]
					close(ready)
				}
			}
		}
		r.done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("parleyd exited before listening: %v\n%s", err, r.logs)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("parleyd did not start:\n%s", r.logs)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// stop sends SIGTERM and expects a clean exit.
func (r *proc) stop() {
	r.t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("parleyd exited uncleanly after SIGTERM: %v\n%s", err, r.logs)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatal("parleyd did not stop after SIGTERM")
	}
}

func (r *proc) do(method, path, user, pass string, body any) (int, map[string]any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, r.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

var b64 = base64.StdEncoding.EncodeToString

func keyMaterial(t *testing.T) (secret string, reg map[string]any) {
	id, _ := protocol.GenerateKeyPair(rand.Reader)
	spk, _ := protocol.GenerateKeyPair(rand.Reader)
	sig := xeddsaSign(id.Private, spk.Public.Bytes())
	pq := make([]byte, 1569)
	rand.Read(pq)
	pq[0] = 8
	pqsig := xeddsaSign(id.Private, pq)
	otk, _ := protocol.GenerateKeyPair(rand.Reader)
	s := make([]byte, 32)
	rand.Read(s)
	secret = base64.RawURLEncoding.EncodeToString(s)
	return secret, map[string]any{
		"credential": secret, "registration_id": 77, "identity_key": b64(id.Public.Bytes()),
		"signed_prekey":         map[string]any{"key_id": 1, "public_key": b64(spk.Public.Bytes()), "signature": b64(sig)},
		"pq_last_resort_prekey": map[string]any{"key_id": 1, "public_key": b64(pq), "signature": b64(pqsig)},
		"prekeys":               []any{map[string]any{"key_id": 1, "public_key": b64(otk.Public.Bytes())}},
	}
}

// registerFlow is the README's walk-through: verify a test number, register,
// and return the device's Basic-auth user and password.
func registerFlow(t *testing.T, r *proc, number, code string) (string, string) {
	st, body := r.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": number})
	if st != 200 {
		t.Fatalf("start verification: %d %v", st, body)
	}
	sid := body["session_id"].(string)
	if st, body = r.do("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": sid, "code": code}); st != 200 {
		t.Fatalf("check code: %d %v", st, body)
	}
	secret, reg := keyMaterial(t)
	reg["session_id"] = sid
	if st, body = r.do("POST", "/v1/accounts", "", "", reg); st != 200 {
		t.Fatalf("register: %d %v", st, body)
	}
	return body["account_id"].(string) + ".1", secret
}

func exerciseRelay(t *testing.T, r *proc) {
	if st, _ := r.do("GET", "/readyz", "", "", nil); st != 200 {
		t.Fatalf("readyz: %d", st)
	}
	aUser, aPass := registerFlow(t, r, "+15555550100", "123456")
	bUser, bPass := registerFlow(t, r, "+15555550101", "123456")
	aliceID := strings.TrimSuffix(aUser, ".1")
	st, bundle := r.do("GET", "/v1/keys/"+aliceID+"/*", bUser, bPass, nil)
	if st != 200 || bundle["devices"].([]any)[0].(map[string]any)["prekey"] == nil {
		t.Fatalf("fetch bundle: %d %v", st, bundle)
	}
	if st, c := r.do("GET", "/v1/keys/count", aUser, aPass, nil); st != 200 || c["ec"] != 0.0 {
		t.Errorf("count after claim: %d %v", st, c)
	}
	resp, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `parley_http_requests_total{code="200",route="POST /v1/accounts"} 2`) {
		t.Errorf("metrics do not count the registrations:\n%s", grep(string(m), "parley_http"))
	}
	if strings.Contains(r.logs.String(), "5555550100") {
		t.Error("the server log contains a full phone number")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rootSecretFile makes a root secret file with `parleyd init-secret`, as a
// relay on PostgreSQL needs.
func rootSecretFile(t *testing.T) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "root.key")
	if out, err := exec.Command(binary, "init-secret", secret).CombinedOutput(); err != nil {
		t.Fatalf("init-secret: %v\n%s", err, out)
	}
	return secret
}

// storageArgs are the flags that put a relay on backend: "sqlite" (a
// fresh data directory) or "postgres" (a fresh database and root secret).
func storageArgs(t *testing.T, backend string) []string {
	t.Helper()
	if backend == "sqlite" {
		return []string{"--data-dir", t.TempDir()}
	}
	return []string{"--database-url", pgtest.Database(t), "--secret-file", rootSecretFile(t)}
}

const testNumbers = "PARLEY_TEST_NUMBERS=+15555550100=123456,+15555550101=123456"

func TestServeSQLite(t *testing.T) {
	dir := t.TempDir()
	r := start(t, []string{testNumbers}, "--data-dir", dir)
	exerciseRelay(t, r)
	r.stop()
	// Nothing on disk holds a phone number in the clear.
	for _, name := range []string{"parley.db", "parley.db-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("5555550100")) || bytes.Contains(b, []byte("5555550101")) {
			t.Errorf("%s contains a phone number in the clear", name)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "root.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("root secret: %v, mode %v", err, fi.Mode())
	}
	// A restart keeps the accounts (same root secret, same number hashes).
	r = start(t, []string{testNumbers}, "--data-dir", dir)
	st, body := r.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": "+15555550100"})
	if st != 200 {
		t.Fatalf("after restart: %d %v", st, body)
	}
	r.stop()
}

func TestServePostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	secret := filepath.Join(t.TempDir(), "root.key")
	// PostgreSQL deployments must share a provisioned secret: none is generated.
	out, err := exec.Command(binary, "serve", "--database-url", dsn, "--secret-file", secret).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "root.key") {
		t.Fatalf("serve without a secret file: err=%v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "init-secret", secret).CombinedOutput(); err != nil {
		t.Fatalf("init-secret: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "migrate", "--database-url", dsn).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	// Two replicas on one database share accounts.
	r1 := start(t, []string{testNumbers}, "--database-url", dsn, "--secret-file", secret)
	r2 := start(t, []string{testNumbers}, "--database-url", dsn, "--secret-file", secret)
	exerciseRelay(t, r1)
	user, pass := registerFlow(t, r2, "+15555550100", "123456") // re-registration through the other replica
	if st, body := r1.do("GET", "/v1/accounts/me", user, pass, nil); st != 200 {
		t.Errorf("replica 1 does not see replica 2's registration: %d %v", st, body)
	}
	r1.stop()
	r2.stop()
}

func TestServeTwilioVerify(t *testing.T) {
	const sid, token = "AC00000000000000000000000000000002", "fedcba9876543210fedcba9876543210"
	fake := twiliotest.New(sid, token)
	defer fake.Close()
	r := start(t, []string{"PARLEY_TWILIO_AUTH_TOKEN=" + token}, "--twilio-base-url", fake.URL,
		"--data-dir", t.TempDir(), "--sms-sender", "twilio-verify",
		"--twilio-account-sid", sid, "--twilio-verify-service-sid", "VA00000000000000000000000000000002")
	const number = "+447700900123"
	st, body := r.do("POST", "/v1/verification/sessions", "", "", map[string]any{"number": number})
	if st != 200 {
		t.Fatalf("start: %d %v", st, body)
	}
	code := fake.LastCode(number)
	if code == "" {
		t.Fatal("Twilio Verify was not asked to send a code")
	}
	st, body = r.do("PUT", "/v1/verification/sessions/code", "", "", map[string]any{"session_id": body["session_id"], "code": code})
	if st != 200 || body["verified"] != true {
		t.Fatalf("check through Twilio: %d %v", st, body)
	}
	if strings.Contains(r.logs.String(), code) {
		t.Error("a Twilio-generated code appears in the server log")
	}
	r.stop()
}

func TestConfigErrorsReportedTogether(t *testing.T) {
	out, err := exec.Command(binary, "serve", "--sms-sender", "carrier-pigeon", "--log-level", "loud", "--test-number", "+1555=1",
		"--attachments", "ftp", "--attachment-url-ttl", "0s", "--ws-request-bytes", "65536").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v", err)
	}
	for _, want := range []string{"--sms-sender", "--log-level", "--test-number", "--attachments", "URL lifetime", "--ws-request-bytes must be at least 1048576"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config errors do not mention %s:\n%s", want, out)
		}
	}
	out, _ = exec.Command(binary, "serve", "--attachments", "s3", "--s3-endpoint", "http://s3:7070", "--s3-public-endpoint", "files.example.org").CombinedOutput()
	for _, want := range []string{"--s3-bucket", `--s3-public-endpoint "files.example.org": want an http:// or https:// URL`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("S3 config errors do not mention %s:\n%s", want, out)
		}
	}
}

// xeddsaSign signs msg as a client signs its prekeys.
func xeddsaSign(k protocol.PrivateKey, msg []byte) []byte {
	sig, err := k.Sign(rand.Reader, msg)
	if err != nil {
		panic(err)
	}
	return sig
}
