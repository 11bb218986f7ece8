package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	stdjson "encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/api/apitest"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/directory"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/sealedsender"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/verify"
)

// The test numbers every env configures, and their fixed code.
const (
	aliceNumber = "+442079460101"
	bobNumber   = "+442079460102"
	carolNumber = "+442079460103"
	testCode    = "424242"
)

// env is a real relay (real services over a real SQLite database) behind an
// httptest server whose every response is checked against openapi.yaml.
type env struct {
	t      testing.TB
	srv    *httptest.Server
	db     *store.DB
	logBuf *syncBuffer
	router routers.Router
	relay  *relay.Service
	attach *attachments.Service
	disk   string // the disk backend's directory
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// envConfig is what tests may change about an env's relay.
type envConfig struct {
	verify    verify.Config
	relay     relay.Config
	directory ratelimit.Rule
	// bundles are the bundle-fetch rules.
	bundles struct{ requester, pair, target ratelimit.Rule }
	// directoryAddress is the per-client-address directory budget.
	directoryAddress ratelimit.Rule
	attach           attachments.Config
	now              func() time.Time
	// sealed issues sender certificates: a fresh server key by default,
	// nil for a relay without sealed sender.
	sealed *sealedsender.Issuer
	// tls serves the API over TLS (httptest's certificate).
	tls bool
}

type envOption func(*envConfig)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	buf := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, nil))
	key := make([]byte, 32)
	rand.Read(key)
	hasher, _ := phone.NewHasher(key)
	cfg := envConfig{verify: verify.DefaultConfig(), relay: relay.DefaultConfig(), directory: directory.DefaultRule,
		directoryAddress: directory.DefaultAddressRule, attach: attachments.DefaultConfig(), now: time.Now}
	cfg.verify.TestNumbers = map[string]string{aliceNumber: testCode, bobNumber: testCode, carolNumber: testCode}
	cfg.bundles.requester = ratelimit.Rule{Burst: 50, Every: time.Second}
	cfg.bundles.pair = prekeys.DefaultPairRule
	cfg.bundles.target = ratelimit.Rule{Burst: 30, Every: time.Second}
	cfg.sealed = newIssuer(t, newTrustRoot(t), 1)
	for _, o := range opts {
		o(&cfg)
	}
	v, err := verify.New(cfg.verify, verify.Options{Store: db, Sender: verify.LogSender{Log: log}, Hasher: hasher, CodeKey: key, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	accts, err := accounts.New(db, v, key, key, log, cfg.now)
	if err != nil {
		t.Fatal(err)
	}
	pre := prekeys.NewService(db, prekeys.Limits{
		PerRequester: ratelimit.New(cfg.bundles.requester, nil),
		PerPair:      ratelimit.New(cfg.bundles.pair, nil),
		PerTarget:    ratelimit.New(cfg.bundles.target, nil),
	})
	rel := relay.New(cfg.relay, db, relay.LocalBus{}, log, cfg.now)
	accts.OnDevicesRemoved = rel.Disconnect
	prov := provisioning.New(db, log, provisioning.DefaultLimits(), rel)
	rel.OnProvisioning(prov.Wake)
	runCtx, stop := context.WithCancel(ctx)
	go rel.Run(runCtx)
	dir := directory.New(db, hasher, ratelimit.New(cfg.directory, nil), ratelimit.New(cfg.directoryAddress, nil))
	diskDir := filepath.Join(t.TempDir(), "attachments")
	disk, err := attachments.NewDisk(diskDir, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { disk.Close() })
	att, err := attachments.New(cfg.attach, attachments.Options{Store: db, Backend: disk, HashKey: key, Log: log,
		Limit: ratelimit.New(attachments.DefaultLimit, nil), Create: ratelimit.New(attachments.DefaultCreateLimit, nil), Now: cfg.now})
	if err != nil {
		t.Fatal(err)
	}
	s := &api.Server{Accounts: accts, Verify: v, PreKeys: pre, Keys: db, DB: db, Relay: rel, Directory: dir, Attachments: att,
		Provisioning: prov, Log: log, SealedSender: cfg.sealed,
		Push: api.PushConfig{Targets: db, Kinds: map[push.Kind]bool{push.WebPush: true, push.APNs: true}, VAPIDPublicKey: testVAPIDKey,
			APNsTopics: map[string]bool{"org.example.app": true}}}

	router := apitest.Router(t)
	e := &env{t: t, db: db, logBuf: buf, router: router, relay: rel, attach: att, disk: diskDir}
	if cfg.tls {
		e.srv = httptest.NewTLSServer(s.Handler())
	} else {
		e.srv = httptest.NewServer(s.Handler())
	}
	t.Cleanup(func() {
		e.srv.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := rel.Shutdown(sctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
		stop()
	})
	return e
}

// creds authenticate a device.
type creds struct {
	Account string
	Device  int
	Secret  string
}

// response is a decoded answer.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func (r response) errCode() string {
	e, _ := r.Body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r response) detail(k string) any {
	e, _ := r.Body["error"].(map[string]any)
	d, _ := e["details"].(map[string]any)
	return d[k]
}

// call sends a request. body may be a string (sent verbatim) or a value
// (JSON-encoded). strict asks for the request, too, to be validated against
// the OpenAPI document (hostile requests are not expected to conform);
// responses are always validated.
func (e *env) call(method, path string, c *creds, body any, strict bool) response {
	e.t.Helper()
	return e.callHeader(method, path, c, body, nil, strict)
}

// callHeader is call with extra request headers.
func (e *env) callHeader(method, path string, c *creds, body any, h http.Header, strict bool) response {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = stdjson.Marshal(b); err != nil {
			e.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c != nil {
		req.SetBasicAuth(c.Account+"."+strconv.Itoa(c.Device), c.Secret)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: out}
	if len(out) > 0 && (resp.StatusCode >= 400 || strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")) {
		if err := stdjson.Unmarshal(out, &r.Body); err != nil {
			e.t.Errorf("%s %s: %d answer is not a JSON object: %q", method, path, resp.StatusCode, out)
		}
	}
	if r.Status >= 500 {
		e.t.Errorf("%s %s: server error %d %s", method, path, r.Status, out)
	}
	e.validate(req, raw, resp, out, strict)
	return r
}

// validate checks the exchange against openapi.yaml.
func (e *env) validate(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte, strict bool) {
	e.t.Helper()
	vreq := req.Clone(context.Background())
	vreq.URL.Host, vreq.URL.Scheme = "127.0.0.1:8080", "http"
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := e.router.FindRoute(vreq)
	if err != nil {
		if strict || resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			e.t.Errorf("%s %s is not in openapi.yaml: %v", req.Method, req.URL.Path, err)
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if strict {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			e.t.Errorf("%s %s: request does not match openapi.yaml: %v", req.Method, req.URL.Path, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(respBody)), Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		e.t.Errorf("%s %s: %d response does not match openapi.yaml: %v\n%s", req.Method, req.URL.Path, resp.StatusCode, err, respBody)
	}
}

// device is a client's key material, generated as a real client would.
type device struct {
	identity protocol.KeyPair
	secret   string
}

func newDevice(t testing.TB) *device {
	kp, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := make([]byte, 32)
	rand.Read(s)
	return &device{identity: kp, secret: base64.RawURLEncoding.EncodeToString(s)}
}

var b64 = base64.StdEncoding.EncodeToString

func (d *device) signedPreKey(t testing.TB, id int) map[string]any {
	kp, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := kp.Public.Bytes()
	sig := xeddsaSign(d.identity.Private, pub)
	return map[string]any{"key_id": id, "public_key": b64(pub), "signature": b64(sig)}
}

func (d *device) pqPreKey(id int) map[string]any {
	pub := make([]byte, 1569)
	rand.Read(pub)
	pub[0] = 0x08
	sig := xeddsaSign(d.identity.Private, pub)
	return map[string]any{"key_id": id, "public_key": b64(pub), "signature": b64(sig)}
}

func (d *device) preKeys(t testing.TB, from, n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		kp, err := protocol.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = map[string]any{"key_id": from + i, "public_key": b64(kp.Public.Bytes())}
	}
	return out
}

func (d *device) pqPreKeys(from, n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = d.pqPreKey(from + i)
	}
	return out
}

func (d *device) registration(t testing.TB, session string, nPre int) map[string]any {
	return map[string]any{
		"session_id": session, "credential": d.secret, "registration_id": 1234,
		"identity_key":          b64(d.identity.Public.Bytes()),
		"signed_prekey":         d.signedPreKey(t, 1),
		"pq_last_resort_prekey": d.pqPreKey(1),
		"prekeys":               d.preKeys(t, 1, nPre),
		"pq_prekeys":            d.pqPreKeys(1, nPre),
	}
}

// verified runs a verification session for a test number to completion.
func (e *env) verified(number string) string {
	e.t.Helper()
	r := e.call("POST", "/v1/verification/sessions", nil, map[string]any{"number": number}, true)
	if r.Status != 200 {
		e.t.Fatalf("start verification: %d %s", r.Status, r.Raw)
	}
	id := r.Body["session_id"].(string)
	r = e.call("PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": id, "code": testCode}, true)
	if r.Status != 200 || r.Body["verified"] != true {
		e.t.Fatalf("check code: %d %s", r.Status, r.Raw)
	}
	return id
}

// register registers number with a new device and nPre one-time prekeys.
func (e *env) register(number string, nPre int) (*device, *creds) {
	e.t.Helper()
	d := newDevice(e.t)
	r := e.call("POST", "/v1/accounts", nil, d.registration(e.t, e.verified(number), nPre), true)
	if r.Status != 200 {
		e.t.Fatalf("register: %d %s", r.Status, r.Raw)
	}
	return d, &creds{Account: r.Body["account_id"].(string), Device: int(r.Body["device_id"].(float64)), Secret: d.secret}
}

var codeInLog = regexp.MustCompile(`"code":"(\d{6})"`)

// loggedCode returns the newest code the log sender wrote.
func (e *env) loggedCode() string {
	m := codeInLog.FindAllStringSubmatch(e.logBuf.String(), -1)
	if len(m) == 0 {
		e.t.Fatal("no code in the log")
	}
	return m[len(m)-1][1]
}

// xeddsaSign signs msg as a client signs its prekeys.
func xeddsaSign(k protocol.PrivateKey, msg []byte) []byte {
	sig, err := k.Sign(rand.Reader, msg)
	if err != nil {
		panic(err)
	}
	return sig
}
