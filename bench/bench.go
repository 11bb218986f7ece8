// Package bench is Parley's load generator: it registers devices on a real
// relay, connects their WebSockets and relays envelopes between random
// pairs over real HTTP and WebSocket, measuring throughput, end-to-end
// latency and the relay process's CPU and memory.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/wire"
)

// MaxDevices is how many distinct test numbers the generator can use.
const MaxDevices = 4_450_000

// Number returns the i-th benchmark phone number (+1 202 555 0000 …,
// then +1 202 556 0000 …).
func Number(i int) string {
	// Exchanges 555, 556, …: ten thousand numbers each, valid up to i of
	// about four million.
	return fmt.Sprintf("+1202%03d%04d", 555+i/10000, i%10000)
}

// TestNumbers returns the test-numbers file (parleyd --test-numbers-file)
// registering n devices needs, all with code.
func TestNumbers(n int, code string) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(Number(i) + "=" + code + "\n")
	}
	return b.String()
}

// Device is a registered device.
type Device struct {
	Account        string
	User, Secret   string
	RegistrationID int
}

// Client talks to one relay.
type Client struct {
	Base string
	HTTP *http.Client
	// SourceAddrs spreads WebSocket connections over 127.0.0.1 … 127.0.0.N
	// (the machine has ~28k ephemeral ports per source address).
	SourceAddrs int
	Progress    io.Writer
}

// NewClient returns a Client with a connection pool sized for conns
// concurrent requests.
func NewClient(base string, conns int) *Client {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &Client{Base: strings.TrimRight(base, "/"), HTTP: &http.Client{Transport: tr, Timeout: 30 * time.Second}, SourceAddrs: 1, Progress: io.Discard}
}

func (c *Client) do(ctx context.Context, method, path string, d *Device, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if d != nil {
		req.SetBasicAuth(d.User, d.Secret)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

var b64 = base64.StdEncoding.EncodeToString

// Register verifies and registers device i (number Number(i), which the
// relay must serve as a test number with code).
func (c *Client) Register(ctx context.Context, i int, code string) (Device, error) {
	var sess struct {
		SessionID string `json:"session_id"`
	}
	if _, err := c.do(ctx, "POST", "/v1/verification/sessions", nil, map[string]any{"number": Number(i)}, &sess); err != nil {
		return Device{}, err
	}
	if _, err := c.do(ctx, "PUT", "/v1/verification/sessions/code", nil, map[string]any{"session_id": sess.SessionID, "code": code}, nil); err != nil {
		return Device{}, err
	}
	id, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		return Device{}, err
	}
	spk, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		return Device{}, err
	}
	spkSig := xeddsaSign(id.Private, spk.Public.Bytes())
	kem, err := protocol.GenerateKEMKeyPair(rand.Reader)
	if err != nil {
		return Device{}, err
	}
	pq := kem.Public.Bytes()
	pqSig := xeddsaSign(id.Private, pq)
	secret := make([]byte, 32)
	rand.Read(secret)
	d := Device{Secret: base64.RawURLEncoding.EncodeToString(secret), RegistrationID: 1 + i%16380}
	var reg struct {
		AccountID string `json:"account_id"`
	}
	_, err = c.do(ctx, "POST", "/v1/accounts", nil, map[string]any{
		"session_id": sess.SessionID, "credential": d.Secret, "registration_id": d.RegistrationID,
		"identity_key":          b64(id.Public.Bytes()),
		"signed_prekey":         map[string]any{"key_id": 1, "public_key": b64(spk.Public.Bytes()), "signature": b64(spkSig)},
		"pq_last_resort_prekey": map[string]any{"key_id": 1, "public_key": b64(pq), "signature": b64(pqSig)},
	}, &reg)
	if err != nil {
		return Device{}, err
	}
	d.Account, d.User = reg.AccountID, reg.AccountID+".1"
	return d, nil
}

// RegisterAll registers devices 0..n-1 with `workers` in parallel.
func (c *Client) RegisterAll(ctx context.Context, n, workers int, code string) ([]Device, error) {
	if n > MaxDevices {
		return nil, fmt.Errorf("at most %d devices", MaxDevices)
	}
	devs := make([]Device, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				d, err := c.Register(ctx, i, code)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("register device %d: %w", i, err) })
					return
				}
				devs[i] = d
				if (i+1)%1000 == 0 {
					fmt.Fprintf(c.Progress, "registered %d/%d devices (%.0f/s)\n", i+1, n, float64(i+1)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	return devs, firstErr
}

// Conn is a device's socket: deliveries, and sends as request frames.
type Conn struct {
	ws *websocket.Conn
	mu sync.Mutex // serialises writes

	pmu     sync.Mutex
	lastID  uint64
	pending map[uint64]chan wire.Frame // requests awaiting their response
	ended   bool
}

// Connect opens the device's WebSocket, from source address index i.
func (c *Client) Connect(ctx context.Context, d Device, i int) (*Conn, error) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%max(c.SourceAddrs, 1)))}
	dialer := &websocket.Dialer{
		HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024,
		NetDialContext: (&net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}).DialContext,
	}
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(d.User+":"+d.Secret)))
	ws, _, err := dialer.DialContext(ctx, "ws"+strings.TrimPrefix(c.Base, "http")+"/v1/websocket", h)
	if err != nil {
		return nil, err
	}
	return &Conn{ws: ws, pending: map[uint64]chan wire.Frame{}}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.ws.Close() }

// Receive reads frames until the socket ends, acknowledging every envelope
// and calling onEnvelope for it, and handing responses to their senders.
func (c *Conn) Receive(onEnvelope func(*wire.Envelope)) error {
	defer func() {
		c.pmu.Lock()
		c.ended = true
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		c.pmu.Unlock()
	}()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		var f wire.Frame
		if err := wire.Decode(data, &f, false); err != nil {
			return err
		}
		if f.Type == wire.FrameResponse {
			c.pmu.Lock()
			ch := c.pending[f.ID]
			delete(c.pending, f.ID)
			c.pmu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		if f.Type != wire.FrameEnvelope {
			continue
		}
		onEnvelope(f.Envelope)
		c.mu.Lock()
		err = c.writeFrame(wire.Frame{Type: wire.FrameAck, IDs: []uuid.UUID{f.Envelope.ID}})
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// sendRequest is the body of a send (PUT /v1/messages/{account}).
type sendRequest struct {
	Timestamp int64         `json:"timestamp"`
	Messages  []sendMessage `json:"messages"`
}

type sendMessage struct {
	DeviceID       int    `json:"device_id"`
	RegistrationID int    `json:"registration_id"`
	Type           int    `json:"type"`
	Content        []byte `json:"content"` // standard base64, as the relay wants
}

// sendBody is a send of content to device 1 of `to`.
func sendBody(to Device, content []byte) sendRequest {
	return sendRequest{Timestamp: time.Now().UnixMilli(),
		Messages: []sendMessage{{DeviceID: 1, RegistrationID: to.RegistrationID, Type: 1, Content: content}}}
}

// writeFrame writes one frame; c.mu is held.
func (c *Conn) writeFrame(f wire.Frame) error {
	b, err := wire.Encode(f)
	if err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// Send sends one envelope of content from `from` to device 1 of `to` over
// HTTP.
func (c *Client) Send(ctx context.Context, from, to Device, content []byte) (int, error) {
	return c.do(ctx, "PUT", "/v1/messages/"+to.Account, &from, sendBody(to, content), nil)
}

// Send sends one envelope of content to device 1 of `to` as a request
// frame on the socket, waiting for the response; it returns the status.
// Receive must be running.
func (c *Conn) Send(ctx context.Context, to Device, content []byte) (int, error) {
	body, err := json.Marshal(sendBody(to, content))
	if err != nil {
		return 0, err
	}
	ch := make(chan wire.Frame, 1)
	c.pmu.Lock()
	if c.ended {
		c.pmu.Unlock()
		return 0, errors.New("socket closed")
	}
	c.lastID++
	id := c.lastID
	c.pending[id] = ch
	c.pmu.Unlock()
	c.mu.Lock()
	err = c.writeFrame(wire.Frame{Type: wire.FrameRequest, ID: id, Verb: "PUT", Path: "/v1/messages/" + to.Account, Body: body})
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return 0, errors.New("socket closed before the response")
		}
		if f.Status != 200 {
			return f.Status, fmt.Errorf("send: %d %s", f.Status, f.Body)
		}
		return f.Status, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Scenario is a relay run: Envelopes of Size bytes between random pairs
// of the devices, from Senders concurrent senders, either as fast as they
// go (Rate 0) or at Rate envelopes per second, sent as request frames on
// the sender's socket or (HTTP) one HTTP request each.
type Scenario struct {
	Envelopes int
	Size      int
	Senders   int
	Rate      float64
	HTTP      bool
}

// Result is what a Scenario measured.
type Result struct {
	Sent        int         // sends answered 200
	Failed      map[int]int // other answers by status (0: no answer)
	Delivered   int         // distinct envelopes received
	Redelivered int         // deliveries of an id already seen
	// Leftover counts envelopes of an earlier run delivered again in this
	// one (that run ended before the relay had their acknowledgements).
	Leftover int
	Elapsed  time.Duration // first send to last delivery
	P50      time.Duration
	P99      time.Duration
	P999     time.Duration
	Max      time.Duration
	Server   Usage
}

// SendRate is accepted sends per second.
func (r Result) SendRate() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

// String formats the result on one line.
func (r Result) String() string {
	fails := 0
	for _, n := range r.Failed {
		fails += n
	}
	failed := fmt.Sprintf("%d failed sends", fails)
	if fails > 0 {
		failed += fmt.Sprintf(" %v", r.Failed) // by reason
	}
	return fmt.Sprintf("%d envelopes in %.2fs = %.0f envelopes/s stored, delivered and acknowledged; latency p50 %v p99 %v p99.9 %v max %v; %s, %d redeliveries, %d left over from an earlier run; server %s",
		r.Sent, r.Elapsed.Seconds(), r.SendRate(), r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond),
		r.P999.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond), failed, r.Redelivered, r.Leftover, r.Server)
}

// Run connects every device, runs s and waits for every accepted envelope
// to be delivered (or ctx to end). pid, if not 0, is the relay process
// whose CPU and memory are reported.
func (c *Client) Run(ctx context.Context, devs []Device, s Scenario, pid int) (Result, error) {
	runStart := time.Now() // envelopes sent before this belong to an earlier run
	conns := make([]*Conn, len(devs))
	for i, d := range devs {
		conn, err := c.Connect(ctx, d, i)
		if err != nil {
			return Result{}, fmt.Errorf("connect device %d: %w", i, err)
		}
		conns[i] = conn
		defer conn.Close()
	}
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, s.Envelopes)
		seen      = make(map[uuid.UUID]bool, s.Envelopes)
		redeliver int
		leftover  int
		lastAt    time.Time
	)
	for _, conn := range conns {
		go conn.Receive(func(e *wire.Envelope) {
			now := time.Now()
			if len(e.Content) < 8 {
				return
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.Content)))
			mu.Lock()
			defer mu.Unlock()
			if sent.Before(runStart) {
				leftover++
				return
			}
			if seen[e.ID] {
				redeliver++
				return
			}
			seen[e.ID] = true
			latencies = append(latencies, now.Sub(sent))
			lastAt = now
		})
	}
	before, _ := ReadUsage(pid)
	start := time.Now()
	var sent atomic.Int64
	failed := map[int]int{}
	var fmu sync.Mutex
	jobs := make(chan time.Time, s.Senders)
	var wg sync.WaitGroup
	for range s.Senders {
		wg.Go(func() {
			content := make([]byte, max(s.Size, 8))
			rand.Read(content)
			for at := range jobs {
				a, b := mrand.IntN(len(devs)), mrand.IntN(len(devs)-1)
				if b >= a {
					b++
				}
				if at.IsZero() {
					at = time.Now()
				}
				binary.BigEndian.PutUint64(content, uint64(at.UnixNano()))
				var st int
				var err error
				if s.HTTP {
					st, err = c.Send(ctx, devs[a], devs[b], content)
				} else {
					st, err = conns[a].Send(ctx, devs[b], content)
				}
				if err == nil && st == 200 {
					sent.Add(1)
					continue
				}
				fmu.Lock()
				failed[st]++
				fmu.Unlock()
			}
		})
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	for i := range s.Envelopes {
		var at time.Time
		if s.Rate > 0 {
			// Open loop: latency counts from the scheduled time, so a
			// stalled relay cannot hide its queueing (no coordinated omission).
			at = start.Add(time.Duration(float64(i) / s.Rate * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case jobs <- at:
		case <-ctx.Done():
			close(jobs)
			return Result{}, ctx.Err()
		}
		select {
		case <-progress.C:
			mu.Lock()
			fmt.Fprintf(c.Progress, "sent %d/%d, delivered %d\n", sent.Load(), s.Envelopes, len(latencies))
			mu.Unlock()
		default:
		}
	}
	close(jobs)
	wg.Wait()
	// Elapsed ends at the last delivery, so polling here does not blur it.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(latencies)
		mu.Unlock()
		if int64(n) >= sent.Load() {
			break
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("waiting for deliveries: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			return Result{}, errors.New("not every accepted envelope arrived within 2 minutes")
		}
	}
	after, _ := ReadUsage(pid)
	mu.Lock()
	defer mu.Unlock()
	r := Result{Sent: int(sent.Load()), Failed: failed, Delivered: len(latencies), Redelivered: redeliver, Leftover: leftover, Elapsed: lastAt.Sub(start)}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	r.P50, r.P99, r.P999 = pct(0.50), pct(0.99), pct(0.999)
	if len(latencies) > 0 {
		r.Max = latencies[len(latencies)-1]
	}
	r.Server = after.Since(before)
	return r, nil
}

// Usage is a process's CPU time and resident memory.
type Usage struct {
	At    time.Time
	CPU   time.Duration // user + system
	RSS   int64         // bytes
	Cores float64       // CPU used per wall second, for a Since result
}

func (u Usage) String() string {
	if u.At.IsZero() {
		return "not measured"
	}
	return fmt.Sprintf("CPU %.2f cores, RSS %.1f MiB", u.Cores, float64(u.RSS)/(1<<20))
}

// Since returns the usage between an earlier reading and u: cores used on
// average, and u's RSS.
func (u Usage) Since(before Usage) Usage {
	if u.At.IsZero() || before.At.IsZero() {
		return Usage{}
	}
	out := u
	out.Cores = (u.CPU - before.CPU).Seconds() / u.At.Sub(before.At).Seconds()
	return out
}

// ReadUsage reads a process's usage from /proc (Linux). pid 0 reads nothing.
func ReadUsage(pid int) (Usage, error) {
	if pid == 0 {
		return Usage{}, nil
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 per second).
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return Usage{}, errors.New("unexpected /proc stat format")
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	u := Usage{At: time.Now(), CPU: time.Duration(ut+st) * 10 * time.Millisecond}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, sc.Err()
}

// WireEnvelope is an envelope as a device receives it.
type WireEnvelope = wire.Envelope

// xeddsaSign signs msg as a client signs its prekeys.
func xeddsaSign(k protocol.PrivateKey, msg []byte) []byte {
	sig, err := k.Sign(rand.Reader, msg)
	if err != nil {
		panic(err)
	}
	return sig
}
