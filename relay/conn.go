package relay

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/wire"
)

// maxOnlinePending bounds online-only envelopes waiting for a connection's
// writer; more are dropped, as online-only envelopes may be.
const maxOnlinePending = 32

// fetchBatch is how many envelopes one queue read returns at most.
const fetchBatch = 64

// AdmitConnection takes one connection from device p's reconnect budget
// on this node (Config.ReconnectBurst, ReconnectInterval). It returns a
// *ratelimit.Error, to be answered with 429 before any upgrade, when the
// device has reconnected too often.
func (s *Service) AdmitConnection(p accounts.Principal) error {
	if ok, wait := s.reconnects.Allow(p.Account.String() + "." + strconv.Itoa(p.Device)); !ok {
		s.log.Debug("websocket reconnects refused", "account", p.Account, "device", p.Device)
		return &ratelimit.Error{RetryAfter: wait}
	}
	return nil
}

// Serve takes device p's WebSocket, upgraded by the API, and serves it in
// its own goroutines (deliveries, acks, and request frames answered by
// serve); it returns at once. While the relay shuts down it returns
// ErrShuttingDown and the caller closes ws.
func (s *Service) Serve(ws *websocket.Conn, p accounts.Principal, serve RequestFunc) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrShuttingDown
	}
	s.conns.Add(1) // released when the read loop ends
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{s: s, ws: ws, account: p.Account, device: p.Device, since: s.now().UnixMilli(),
		serve: serve, ctx: ctx, cancel: cancel, requests: make(chan struct{}, wire.MaxRequestsInFlight)}
	if s.cfg.FrameRate > 0 && s.cfg.FrameBurst > 0 {
		c.frames = rate.NewLimiter(rate.Limit(s.cfg.FrameRate), s.cfg.FrameBurst)
	}
	ws.SetReadLimit(wire.MaxClientFrame)
	old, ok := s.hub.add(c)
	if !ok { // shutdown began meanwhile
		c.close(websocket.CloseGoingAway, "server shutting down")
		go c.readLoop()
		return nil
	}
	if old != nil {
		old.close(wire.CloseReplaced, "replaced by a newer connection")
	}
	s.bus.Publish(Event{Kind: EventConnected, Account: p.Account, Device: p.Device, At: c.since})
	c.schedulePing()
	c.wake()
	// The read loop runs after the HTTP handler returns, so net/http's
	// buffers are released while the connection idles.
	go c.readLoop()
	return nil
}

// Closing reports whether the relay has begun to shut down (new
// connections are refused).
func (s *Service) Closing() bool { return s.closing() }

// conn is one device's live WebSocket.
type conn struct {
	s       *Service
	ws      *websocket.Conn
	account uuid.UUID
	device  int
	since   int64 // Unix ms when the connection was accepted
	// frames limits the frames the device sends (nil: unlimited) and
	// overRate records that it was exceeded; only the read loop uses them.
	frames   *rate.Limiter
	overRate bool
	// serve answers request frames, each in its own goroutine (at most
	// wire.MaxRequestsInFlight at once: requests holds a token for each) under
	// ctx, which cancel ends when the connection finishes.
	serve    RequestFunc
	ctx      context.Context
	cancel   context.CancelFunc
	requests chan struct{}
	// wmu serialises data frames: delivery and responses both write.
	wmu sync.Mutex

	mu       sync.Mutex
	inflight map[uuid.UUID]int64 // delivered or claimed, unacknowledged: id → seq
	cursor   int64               // highest seq delivered or claimed
	running  bool                // a delivery goroutine is active
	again    bool                // the queue must be read (again)
	// handed are envelopes handed off by a sender's commit, claimed
	// (in inflight, cursor moved past them) and waiting to be written.
	handed    []Envelope
	emptySent bool
	online    []Envelope
	closing   bool
	pinger    *time.Timer
}

// wake makes the connection read its queue.
func (c *conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.again = true
	c.startLocked()
}

// startLocked starts the delivery goroutine unless it runs; c.mu is held.
func (c *conn) startLocked() {
	if c.running {
		return
	}
	c.running = true
	c.s.conns.Add(1) // the read loop's count is held, so this cannot race Wait
	go c.deliver()
}

func (c *conn) pushOnline(e Envelope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if len(c.online) < maxOnlinePending {
		c.online = append(c.online, e)
	}
	c.startLocked()
}

// handOff takes an envelope just stored for this device without reading
// the queue, when the connection has delivered (or claimed) everything
// queued before it and its window has room; otherwise it reads the queue.
// The database stays the source of truth: a handed-off envelope is deleted
// only when acknowledged, like any other.
// It reports false when the connection is closing, so that the caller
// wakes the device's connection on other nodes (it may have reconnected
// there while this one drains).
func (c *conn) handOff(e Envelope) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if e.Prev != c.cursor || len(c.inflight) >= c.s.cfg.Window {
		c.again = true
		c.startLocked()
		return true
	}
	c.claimLocked(e)
	c.handed = append(c.handed, e)
	c.startLocked()
	return true
}

// claimLocked records e as delivered; c.mu is held.
func (c *conn) claimLocked(e Envelope) {
	if c.inflight == nil {
		c.inflight = make(map[uuid.UUID]int64, c.s.cfg.Window)
	}
	c.inflight[e.ID] = e.Seq
	c.cursor = e.Seq
}

// deliver writes online-only envelopes, handed-off ones and, when woken,
// the stored queue until it is drained or the window of unacknowledged
// envelopes is full. There is no writer goroutine while a connection
// idles; startLocked starts one. Once the connection is closing nothing
// starts it, so the exits on failure (which all mark it closing) leave
// running as it is.
func (c *conn) deliver() {
	defer c.s.conns.Done()
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return
		}
		online, handed := c.online, c.handed
		c.online, c.handed = nil, nil
		read := c.again
		c.again = false
		room := c.s.cfg.Window - len(c.inflight)
		cursor := c.cursor
		c.mu.Unlock()

		if !c.writeEnvelopes(online) || !c.writeEnvelopes(handed) {
			return
		}
		if read && room > 0 {
			limit := min(room, fetchBatch)
			ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
			envs, err := c.s.store.Pending(ctx, c.account, c.device, cursor, c.s.now(), limit)
			cancel()
			if err != nil && c.ctx.Err() != nil {
				return // the connection ended meanwhile
			}
			if err != nil {
				c.s.log.Error("read queue", "account", c.account, "device", c.device, "err", err)
				c.close(websocket.CloseInternalServerErr, "internal error")
				return
			}
			for _, e := range envs {
				// Envelopes handed off while the queue was read are
				// claimed already; they come before any later one.
				c.mu.Lock()
				handed, c.handed = c.handed, nil
				claimed := e.Seq <= c.cursor
				if !claimed {
					c.claimLocked(e)
				}
				c.mu.Unlock()
				if !c.writeEnvelopes(handed) {
					return
				}
				if !claimed && !c.writeEnvelopes([]Envelope{e}) {
					return
				}
			}
			if len(envs) == limit {
				c.mu.Lock()
				c.again = true // there may be more
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			first := !c.emptySent
			c.emptySent = true
			c.mu.Unlock()
			if first && !c.write(wire.Frame{Type: wire.FrameQueueEmpty}) {
				return
			}
		}
		c.mu.Lock()
		if c.closing || (!c.again && len(c.online) == 0 && len(c.handed) == 0) {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// writeEnvelopes writes envelopes in order; on false the connection is
// closing.
func (c *conn) writeEnvelopes(envs []Envelope) bool {
	for _, e := range envs {
		if !c.write(wire.Frame{Type: wire.FrameEnvelope, Envelope: wireEnvelope(e)}) {
			return false
		}
	}
	return true
}

// write sends one frame within the write timeout; a peer too slow to take
// it loses the connection (its envelopes stay queued). On false the
// connection is closing.
func (c *conn) write(f wire.Frame) bool {
	b, err := json.Marshal(f)
	if err != nil {
		c.s.log.Error("encode frame", "err", err)
		c.close(websocket.CloseInternalServerErr, "internal error")
		return false
	}
	c.wmu.Lock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	err = c.ws.WriteMessage(websocket.TextMessage, b)
	c.wmu.Unlock()
	if errors.Is(err, websocket.ErrCloseSent) {
		return false // closing cleanly: the read loop still takes the last acks
	}
	if err != nil {
		c.abort()
		return false
	}
	return true
}

// readLoop reads acknowledgements until the connection ends.
func (c *conn) readLoop() {
	defer c.finish()
	wait := 2 * c.s.cfg.PingInterval
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error {
		if !c.allowFrame() { // pongs, even unsolicited ones, are frames too
			return nil
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if !closing {
			_ = c.ws.SetReadDeadline(time.Now().Add(wait))
		}
		return nil
	})
	// Pings count against the frame rate too; the answer is gorilla's
	// default pong.
	c.ws.SetPingHandler(func(data string) error {
		if !c.allowFrame() {
			return nil
		}
		err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if !c.allowFrame() {
			continue // over the rate: dropped while the close completes
		}
		if typ != websocket.TextMessage {
			c.close(websocket.CloseUnsupportedData, "frames must be JSON text")
			continue
		}
		var f wire.Frame
		if err := json.Unmarshal(data, &f, json.RejectUnknownMembers(true)); err != nil {
			c.close(websocket.ClosePolicyViolation, "malformed frame")
			continue
		}
		switch {
		case f.Type == wire.FrameAck && f.Envelope == nil && len(f.IDs) > 0 && len(f.IDs) <= wire.MaxAckIDs && f.ID == 0 &&
			f.Verb == "" && f.Path == "" && f.Status == 0 && f.Headers == nil && f.Body == nil:
			c.ack(f.IDs)
		case f.Type == wire.FrameRequest && f.Envelope == nil && f.IDs == nil && f.ID > 0 && f.Verb != "" && f.Path != "" && f.Status == 0:
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			if !closing { // its answer could not be sent: not served, so a retry is safe
				c.request(f)
			}
		default:
			c.close(websocket.ClosePolicyViolation, "expected an ack frame with 1 to 1000 ids or a request frame with an id, verb and path")
		}
	}
}

// request serves a request frame in its own goroutine and writes the
// response. Past wire.MaxRequestsInFlight the read loop waits for a slot, so a
// client sending faster than the relay answers is slowed, not buffered.
func (c *conn) request(f wire.Frame) {
	select {
	case c.requests <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	c.s.conns.Add(1) // the read loop's count is held, so this cannot race Wait
	go func() {
		defer c.s.conns.Done()
		defer func() { <-c.requests }()
		defer func() {
			// As net/http does for a request: one failing request must not
			// take the node down.
			if v := recover(); v != nil {
				c.s.log.Error("request frame panicked", "panic", v, "stack", string(debug.Stack()))
				c.write(wire.Frame{Type: wire.FrameResponse, ID: f.ID, Status: http.StatusInternalServerError,
					Body: jsontext.Value(`{"error":{"code":"internal_error","message":"internal error"}}`)})
			}
		}()
		resp := c.serve(c.ctx, accounts.Principal{Account: c.account, Device: c.device}, f)
		resp.Type, resp.ID = wire.FrameResponse, f.ID
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if !closing {
			c.write(resp)
		}
	}()
}

// allowFrame takes one frame from the connection's frame budget. The
// first frame over it closes the connection with wire.CloseFrameRate; frames
// over it are dropped. Frames within it are handled even while the
// connection closes, so acks sent during a graceful drain still count.
// Only the read loop calls it (gorilla runs control handlers there too).
func (c *conn) allowFrame() bool {
	if c.frames == nil || c.frames.Allow() {
		return true
	}
	if !c.overRate {
		c.overRate = true
		c.s.log.Warn("websocket frame rate exceeded; closing", "account", c.account, "device", c.device)
		c.close(wire.CloseFrameRate, "frame rate limit exceeded")
	}
	return false
}

// ack forgets acknowledged envelopes and queues their deletion; ids this
// connection did not deliver are ignored.
func (c *conn) ack(ids []uuid.UUID) {
	c.mu.Lock()
	full := len(c.inflight) >= c.s.cfg.Window
	acks := make([]Ack, 0, len(ids))
	for _, id := range ids {
		if seq, ok := c.inflight[id]; ok {
			delete(c.inflight, id)
			acks = append(acks, Ack{Account: c.account, Device: c.device, Seq: seq})
		}
	}
	c.mu.Unlock()
	if len(acks) > 0 {
		c.s.commits.ack(acks)
		if full {
			c.wake()
		}
	}
}

func (c *conn) schedulePing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	checked := time.Now()
	c.pinger = time.AfterFunc(c.s.cfg.PingInterval, func() {
		if every := c.s.cfg.DeviceCheckInterval; every > 0 && time.Since(checked) >= every {
			checked = time.Now()
			if c.removed() {
				c.close(wire.CloseDeviceRemoved, "device removed")
				return
			}
		}
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
			c.abort()
			return
		}
		c.mu.Lock()
		if !c.closing {
			c.pinger.Reset(c.s.cfg.PingInterval)
		}
		c.mu.Unlock()
	})
}

// removed reports whether the connection's device no longer exists (a
// failed lookup is not taken as removal).
func (c *conn) removed() bool {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	devs, err := c.s.store.Devices(ctx, c.account)
	if err != nil {
		return false
	}
	for _, d := range devs {
		if d.ID == c.device {
			return false
		}
	}
	return true
}

// close starts a clean close: a close frame now, and the read loop waits a
// moment for the peer's answer before dropping the connection.
func (c *conn) close(code int, reason string) {
	if !c.markClosing() {
		return
	}
	deadline := time.Now().Add(time.Second)
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		_ = c.ws.Close()
		return
	}
	_ = c.ws.SetReadDeadline(deadline.Add(time.Second))
}

// abort drops a broken connection at once.
func (c *conn) abort() {
	c.markClosing()
	_ = c.ws.Close()
}

func (c *conn) markClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	if c.pinger != nil {
		c.pinger.Stop()
	}
	return true
}

func (c *conn) finish() {
	c.cancel()
	c.markClosing()
	_ = c.ws.Close()
	c.s.hub.remove(c)
	c.s.conns.Done()
}
