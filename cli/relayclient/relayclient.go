// Package relayclient speaks parleyd's HTTP and WebSocket API
// (api/openapi.yaml, api/websocket.md) for the parley client. It knows
// the wire format and error bodies, nothing about encryption.
package relayclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/wire"
)

// Client talks to one relay, optionally as one device.
type Client struct {
	base *url.URL
	http *http.Client
	// unidentified carries sealed sends: its own transport, no connection
	// reuse, so a sealed send never travels on a connection that carried
	// this device's credentials.
	unidentified *http.Client
	// objects moves attachment bodies to and from the object store.
	objects *http.Client
	// tls is the TLS configuration of every connection (nil: defaults).
	tls *tls.Config
	// User and Password authenticate requests as a device ("ACCOUNT.DEVICE"
	// and its credential); empty for the unauthenticated verification calls.
	User, Password string
	// live is the device's open socket, if any: message sends go over it
	// (api/websocket.md) instead of one HTTP request each.
	live atomic.Pointer[Socket]
}

// New returns a client for the relay at base (http:// or https://) that
// trusts the system's certificate authorities.
func New(base string) (*Client, error) { return NewWithRoots(base, nil) }

// NewWithRoots is New trusting roots (nil: the system's) for the relay's
// TLS, its WebSockets and the object store's URLs.
func NewWithRoots(base string, roots *x509.CertPool) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want an http:// or https:// URL", base)
	}
	var tlsCfg *tls.Config
	if roots != nil {
		tlsCfg = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	transport := func(keepAlive bool) *http.Transport {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// A copy each: a transport adds "h2" to its configuration's
		// protocols, which the WebSocket handshake must not offer.
		tr.TLSClientConfig, tr.DisableKeepAlives = tlsCfg.Clone(), !keepAlive
		return tr
	}
	return &Client{base: u, tls: tlsCfg,
		http:         &http.Client{Timeout: 60 * time.Second, Transport: transport(true)},
		unidentified: &http.Client{Timeout: 60 * time.Second, Transport: transport(false)},
		// Object bodies: no overall timeout (a large file on a slow link
		// takes long), the caller's context bounds it.
		objects: &http.Client{Transport: transport(true)}}, nil
}

// dialer is the WebSocket dialer, trusting what the client trusts.
func (c *Client) dialer() *websocket.Dialer {
	return &websocket.Dialer{HandshakeTimeout: 30 * time.Second, Proxy: http.ProxyFromEnvironment, TLSClientConfig: c.tls.Clone()}
}

// Error is an error answer from the relay.
type Error struct {
	Status     int
	Code       string
	Message    string
	Details    map[string]json.RawMessage
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("relay refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// ErrUnavailable wraps failures to reach the relay at all.
var ErrUnavailable = errors.New("relay unreachable")

// IsCode reports whether err is a relay error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Details decodes one member of a relay error's details into v.
func Details(err error, key string, v any) bool {
	var e *Error
	if !errors.As(err, &e) || e.Details[key] == nil {
		return false
	}
	return json.Unmarshal(e.Details[key], v) == nil
}

// do sends body as JSON and decodes a 2xx answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, header http.Header, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.http
	if req.Header.Get(unidentifiedAccessHeader) != "" {
		hc = c.unidentified // a sealed send must not say, or show by its connection, who sends it
	} else if c.User != "" {
		req.SetBasicAuth(c.User, c.Password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: reading answer: %w", ErrUnavailable, err)
	}
	return resp.Header, decodeAnswer(resp.StatusCode, resp.Header, raw, out, method, path)
}

// decodeAnswer turns the relay's answer (over HTTP or in a response frame)
// into an *Error, or decodes a 2xx body into out (if not nil).
func decodeAnswer(status int, header http.Header, raw []byte, out any, method, path string) error {
	if status >= 300 {
		e := &Error{Status: status}
		var eb struct {
			Error struct {
				Code    string                     `json:"code"`
				Message string                     `json:"message"`
				Details map[string]json.RawMessage `json:"details"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			e.Code, e.Message, e.Details = eb.Error.Code, eb.Error.Message, eb.Error.Details
		} else {
			// Not the relay's JSON: a proxy or load balancer answered
			// (often with an HTML page, which is no use on a terminal).
			e.Code = "not_the_relay"
			e.Message = http.StatusText(status) + " from something in front of the relay (a proxy or load balancer), not from parleyd"
		}
		if s, err := strconv.Atoi(header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("relay answered %s %s with an unreadable body: %w", method, path, err)
		}
	}
	return nil
}

// send submits a message send: over the device's open socket when there
// is one, else (or when the socket ended before the request left, or, for
// a send with an idempotency key, before its answer came) over HTTP.
func (c *Client) send(ctx context.Context, path, idempotencyKey string, body, out any) error {
	if s := c.live.Load(); s != nil {
		err := s.request(ctx, path, idempotencyKey, body, out)
		switch {
		case errors.Is(err, errNotSent), errors.Is(err, errNoAnswer) && idempotencyKey != "":
			// The relay may have stored it: the key makes the retry safe.
		default:
			return err
		}
	}
	var h http.Header
	if idempotencyKey != "" {
		h = http.Header{"Idempotency-Key": {idempotencyKey}}
	}
	_, err := c.do(ctx, "PUT", path, h, body, out)
	return err
}

// VerificationSession is the state of a phone-number verification.
type VerificationSession struct {
	SessionID    string `json:"session_id"`
	Verified     bool   `json:"verified"`
	ExpiresAt    int64  `json:"expires_at"`
	NextSendAt   *int64 `json:"next_send_at"`
	AttemptsLeft int    `json:"attempts_left"`
}

// StartVerification asks the relay to send a code to number.
func (c *Client) StartVerification(ctx context.Context, number string) (VerificationSession, error) {
	var s VerificationSession
	_, err := c.do(ctx, "POST", "/v1/verification/sessions", nil, map[string]string{"number": number}, &s)
	return s, err
}

// CheckCode submits the code received by SMS.
func (c *Client) CheckCode(ctx context.Context, sessionID, code string) (VerificationSession, error) {
	var s VerificationSession
	_, err := c.do(ctx, "PUT", "/v1/verification/sessions/code", nil, map[string]string{"session_id": sessionID, "code": code}, &s)
	return s, err
}

// SignedKey is a public prekey with its key id (and signature, for signed ones).
type SignedKey struct {
	KeyID     uint32 `json:"key_id"`
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature,omitempty"`
}

// Registration is the body of POST /v1/accounts.
type Registration struct {
	SessionID        string      `json:"session_id"`
	Credential       string      `json:"credential"`
	RegistrationID   uint32      `json:"registration_id"`
	IdentityKey      []byte      `json:"identity_key"`
	SignedPreKey     SignedKey   `json:"signed_prekey"`
	PQLastResortKey  SignedKey   `json:"pq_last_resort_prekey"`
	PreKeys          []SignedKey `json:"prekeys"`
	PQPreKeys        []SignedKey `json:"pq_prekeys"`
	RegistrationLock []byte      `json:"registration_lock,omitempty"`
}

// Register creates the account and its first device; it returns the
// account id and device id.
func (c *Client) Register(ctx context.Context, r Registration) (string, int, error) {
	var out struct {
		AccountID string `json:"account_id"`
		DeviceID  int    `json:"device_id"`
	}
	_, err := c.do(ctx, "POST", "/v1/accounts", nil, r, &out)
	return out.AccountID, out.DeviceID, err
}

// KeyUpload is the body of PUT /v1/keys; nil members are left unchanged.
type KeyUpload struct {
	SignedPreKey    *SignedKey  `json:"signed_prekey,omitempty"`
	PQLastResortKey *SignedKey  `json:"pq_last_resort_prekey,omitempty"`
	PreKeys         []SignedKey `json:"prekeys,omitempty"`
	PQPreKeys       []SignedKey `json:"pq_prekeys,omitempty"`
	// ReplacePQPreKeys makes the relay delete the device's unclaimed
	// one-time PQ prekeys before adding PQPreKeys.
	ReplacePQPreKeys bool `json:"replace_pq_prekeys,omitempty"`
}

// UploadKeys publishes new prekeys.
func (c *Client) UploadKeys(ctx context.Context, u KeyUpload) error {
	_, err := c.do(ctx, "PUT", "/v1/keys", nil, u, nil)
	return err
}

// KeyCount is how many one-time prekeys the relay still holds.
type KeyCount struct {
	EC       int `json:"ec"`
	PQ       int `json:"pq"`
	LowWater int `json:"low_water"`
}

// CountKeys returns the caller's unclaimed one-time prekeys.
func (c *Client) CountKeys(ctx context.Context) (KeyCount, error) {
	var k KeyCount
	_, err := c.do(ctx, "GET", "/v1/keys/count", nil, nil, &k)
	return k, err
}

// Bundle is what a sender needs to start sessions with an account's devices.
type Bundle struct {
	IdentityKey []byte         `json:"identity_key"`
	Devices     []DeviceBundle `json:"devices"`
}

// DeviceBundle is one device's prekeys.
type DeviceBundle struct {
	DeviceID       int        `json:"device_id"`
	RegistrationID uint32     `json:"registration_id"`
	SignedPreKey   SignedKey  `json:"signed_prekey"`
	PreKey         *SignedKey `json:"prekey"`
	PQPreKey       SignedKey  `json:"pq_prekey"`
	PQLastResort   bool       `json:"pq_last_resort"`
}

// Bundles fetches (claiming one-time prekeys) the bundles of one device of
// account, or of all its devices when device is 0.
func (c *Client) Bundles(ctx context.Context, account string, device int) (Bundle, error) {
	d := "*"
	if device != 0 {
		d = strconv.Itoa(device)
	}
	var b Bundle
	_, err := c.do(ctx, "GET", "/v1/keys/"+url.PathEscape(account)+"/"+d, nil, nil, &b)
	return b, err
}

// Lookup returns the account registered on number.
func (c *Client) Lookup(ctx context.Context, number string) (string, error) {
	var out struct {
		AccountID string `json:"account_id"`
	}
	_, err := c.do(ctx, "POST", "/v1/directory", nil, map[string]string{"number": number}, &out)
	return out.AccountID, err
}

// Outgoing is one device's envelope in a send.
type Outgoing struct {
	DeviceID       int    `json:"device_id"`
	RegistrationID uint32 `json:"registration_id"`
	Type           int    `json:"type"`
	Content        []byte `json:"content"`
}

// Send is the body of PUT /v1/messages/{account}.
type Send struct {
	Timestamp int64      `json:"timestamp"`
	ExpiresIn int64      `json:"expires_in,omitempty"`
	Online    bool       `json:"online,omitempty"`
	Urgent    bool       `json:"urgent,omitempty"`
	Messages  []Outgoing `json:"messages"`
}

// Sent is the relay's answer to an accepted send.
type Sent struct {
	ServerTimestamp int64 `json:"server_timestamp"`
	// SkippedDevices are addressed devices the relay did not store the
	// send for because their queue had no room; every other device has
	// it, so the send has not failed.
	SkippedDevices []SkippedDevice `json:"skipped_devices"`
}

// SkippedDevice is a device a send did not reach. Reason is "queue_full"
// (the device's queue is full: it has been offline long) or
// "sender_share_full" (our share of its queue is used up).
type SkippedDevice struct {
	AccountID string `json:"account_id"`
	DeviceID  int    `json:"device_id"`
	Reason    string `json:"reason"`
}

// SendMessages submits envelopes for every device of account. A non-empty
// idempotencyKey makes a retry of the same body safe.
func (c *Client) SendMessages(ctx context.Context, account string, s Send, idempotencyKey string) (Sent, error) {
	var out Sent
	err := c.send(ctx, "/v1/messages/"+url.PathEscape(account), idempotencyKey, s, &out)
	return out, err
}

// Device is one device of the caller's account.
type Device struct {
	DeviceID       int    `json:"device_id"`
	RegistrationID int    `json:"registration_id"`
	Created        string `json:"created"`
	LastSeen       string `json:"last_seen"`
}

// Devices lists the caller's devices.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var out struct {
		Devices []Device `json:"devices"`
	}
	_, err := c.do(ctx, "GET", "/v1/devices", nil, nil, &out)
	return out.Devices, err
}

// RemoveDevice unlinks one of the caller's devices.
func (c *Client) RemoveDevice(ctx context.Context, device int) error {
	_, err := c.do(ctx, "DELETE", "/v1/devices/"+strconv.Itoa(device), nil, nil, nil)
	return err
}

// DeleteAccount deletes the caller's account and everything the relay holds for it.
func (c *Client) DeleteAccount(ctx context.Context) error {
	_, err := c.do(ctx, "DELETE", "/v1/accounts/me", nil, nil, nil)
	return err
}

// SetRegistrationLock sets the registration-lock token; nil removes the lock.
func (c *Client) SetRegistrationLock(ctx context.Context, token []byte) error {
	if token == nil {
		_, err := c.do(ctx, "DELETE", "/v1/accounts/me/registration-lock", nil, nil, nil)
		return err
	}
	_, err := c.do(ctx, "PUT", "/v1/accounts/me/registration-lock", nil, map[string][]byte{"token": token}, nil)
	return err
}

// Socket is a device's WebSocket: it receives envelopes and, while open,
// carries the device's message sends (request frames).
type Socket struct {
	conn   *websocket.Conn
	client *Client
	wmu    sync.Mutex // serialises writes: acks and requests
	// frames are what the reader goroutine read, responses excepted; err
	// is why it stopped (set before frames is closed).
	frames chan wire.Frame
	err    error

	pmu     sync.Mutex
	lastID  uint64
	pending map[uint64]chan wire.Frame // requests awaiting their response
	ended   bool
}

// maxQueuedFrames bounds the frames read ahead of Read. Stored envelopes
// never fill it (the relay sends at most 128 unacknowledged); online-only
// ones beyond it are dropped, as they may be, so the reader never stops
// and responses keep arriving while the caller is busy.
const maxQueuedFrames = 512

// Connect opens the caller's WebSocket. Until it is closed, the client's
// message sends go over it.
func (c *Client) Connect(ctx context.Context) (*Socket, error) {
	u := *c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/v1/websocket"
	h := http.Header{}
	req := http.Request{Header: h}
	req.SetBasicAuth(c.User, c.Password)
	conn, resp, err := c.dialer().DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, &Error{Status: 401, Code: "unauthorized", Message: "the relay does not know this device (unregistered or removed)"}
		}
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			e := &Error{Status: 429, Code: "rate_limited", Message: "this device reconnected too often; wait and try again"}
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
				e.RetryAfter = time.Duration(s) * time.Second
			}
			return nil, e
		}
		return nil, fmt.Errorf("%w: websocket: %w", ErrUnavailable, err)
	}
	conn.SetReadLimit(1 << 20)
	s := &Socket{conn: conn, client: c, frames: make(chan wire.Frame, maxQueuedFrames), pending: map[uint64]chan wire.Frame{}}
	// The relay pings every 30 s; silence for 90 s means the link is gone.
	const silence = 90 * time.Second
	conn.SetPingHandler(func(data string) error {
		conn.SetReadDeadline(time.Now().Add(silence))
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
	})
	go s.read(silence)
	c.live.Store(s)
	return s, nil
}

// read reads frames until the socket ends, answering requests and queueing
// the rest for Read.
func (s *Socket) read(silence time.Duration) {
	var err error
	for {
		s.conn.SetReadDeadline(time.Now().Add(silence))
		var f wire.Frame
		var data []byte
		if _, data, err = s.conn.ReadMessage(); err != nil {
			break
		}
		if err = wire.Decode(data, &f, false); err != nil {
			break
		}
		if f.Type == wire.FrameResponse {
			s.pmu.Lock()
			ch := s.pending[f.ID]
			delete(s.pending, f.ID)
			s.pmu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		if f.Envelope != nil && f.Envelope.Online {
			select {
			case s.frames <- f:
			default: // dropped, as online-only envelopes may be
			}
			continue
		}
		s.frames <- f
	}
	s.client.live.CompareAndSwap(s, nil)
	s.pmu.Lock()
	s.ended = true
	for id, ch := range s.pending {
		close(ch)
		delete(s.pending, id)
	}
	s.pmu.Unlock()
	s.err = err
	close(s.frames)
}

// Read returns the next frame (envelopes, queue_empty). A closed socket's
// error wraps *websocket.CloseError (codes wire.CloseReplaced,
// wire.CloseDeviceRemoved).
func (s *Socket) Read() (wire.Frame, error) {
	f, ok := <-s.frames
	if !ok {
		return wire.Frame{}, s.err
	}
	return f, nil
}

// Ack acknowledges envelopes by id (at most wire.MaxAckIDs at once).
func (s *Socket) Ack(ids ...uuid.UUID) error {
	return s.write(wire.Frame{Type: wire.FrameAck, IDs: ids})
}

func (s *Socket) write(f wire.Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b, err := wire.Encode(f)
	if err != nil {
		return err
	}
	s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return s.conn.WriteMessage(websocket.TextMessage, b)
}

// Errors of a request over the socket that HTTP may retry.
var (
	errNotSent  = errors.New("socket closed before the request was sent")
	errNoAnswer = errors.New("socket closed before the relay answered")
)

// request sends PUT path as a request frame and decodes the answer like an
// HTTP answer.
func (s *Socket) request(ctx context.Context, path, idempotencyKey string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	f := wire.Frame{Type: wire.FrameRequest, Verb: "PUT", Path: path, Body: raw}
	if idempotencyKey != "" {
		f.Headers = map[string]string{"Idempotency-Key": idempotencyKey}
	}
	ch := make(chan wire.Frame, 1)
	s.pmu.Lock()
	if s.ended {
		s.pmu.Unlock()
		return errNotSent
	}
	s.lastID++
	f.ID = s.lastID
	s.pending[f.ID] = ch
	s.pmu.Unlock()
	if err := s.write(f); err != nil {
		s.pmu.Lock()
		delete(s.pending, f.ID)
		s.pmu.Unlock()
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return fmt.Errorf("%w: %w", ErrUnavailable, errNoAnswer)
		}
		h := http.Header{}
		for k, v := range resp.Headers {
			h.Set(k, v)
		}
		return decodeAnswer(resp.Status, h, resp.Body, out, "PUT", path)
	case <-ctx.Done():
		s.pmu.Lock()
		delete(s.pending, f.ID)
		s.pmu.Unlock()
		return ctx.Err()
	}
}

// Close closes the socket; sends go over HTTP again.
func (s *Socket) Close() error {
	s.client.live.CompareAndSwap(s, nil)
	return s.conn.Close()
}

// DeviceRef is one device of a multi-recipient send.
type DeviceRef struct {
	DeviceID       int `json:"device_id"`
	RegistrationID int `json:"registration_id"`
}

// MultiRecipient is one account of a multi-recipient send.
type MultiRecipient struct {
	AccountID string      `json:"account_id"`
	Devices   []DeviceRef `json:"devices"`
}

// MultiSend is one ciphertext for the listed devices of many accounts.
type MultiSend struct {
	Timestamp  int64            `json:"timestamp"`
	ExpiresIn  int64            `json:"expires_in,omitempty"`
	Urgent     bool             `json:"urgent,omitempty"`
	Type       int              `json:"type"`
	Content    []byte           `json:"content"`
	Recipients []MultiRecipient `json:"recipients"`
}

// SendMulti submits a multi-recipient send (PUT /v1/messages).
func (c *Client) SendMulti(ctx context.Context, s MultiSend, idempotencyKey string) (Sent, error) {
	var out Sent
	err := c.send(ctx, "/v1/messages", idempotencyKey, s, &out)
	return out, err
}
