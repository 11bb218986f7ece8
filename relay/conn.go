package relay

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"golang.org/x/sync/semaphore"
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
//
// br is the connection's read buffer when the API gave gorilla one of its
// own (nil otherwise). Knowing when it is empty lets an idle connection
// wait for its next frame without a goroutine of its own (see poller);
// without it, or where the socket cannot be polled (TLS terminated here,
// not Linux), one goroutine waits on each connection.
func (s *Service) Serve(ws *websocket.Conn, br *bufio.Reader, p accounts.Principal, serve RequestFunc) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrShuttingDown
	}
	s.conns.Add(1) // released by finish
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{s: s, ws: ws, account: p.Account, device: p.Device, since: s.now().UnixMilli(),
		serve: serve, ctx: ctx, cancel: cancel}
	if s.cfg.FrameRate > 0 && s.cfg.FrameBurst > 0 {
		c.frames = rate.NewLimiter(rate.Limit(s.cfg.FrameRate), s.cfg.FrameBurst)
	}
	ws.SetReadLimit(wire.MaxClientFrame)
	c.setupRead()
	// Polled from here on: frames may be read before the connection is in
	// the hub, as the read loop below may.
	polled := c.poll(br)
	old, ok := s.hub.add(c)
	if !ok { // shutdown began meanwhile
		c.close(websocket.CloseGoingAway, "server shutting down")
		if !polled {
			go c.readLoop()
		}
		return nil
	}
	if old != nil {
		old.close(wire.CloseReplaced, "replaced by a newer connection")
	}
	if c.gone.Load() {
		// The poller's reader finished it (the socket failed at once)
		// before it was in the hub, so its finish could not remove it.
		s.hub.remove(c)
		return nil
	}
	s.bus.Publish(Event{Kind: EventConnected, Account: p.Account, Device: p.Device, At: c.since})
	c.schedulePing()
	c.wake()
	// The read loop runs after the HTTP handler returns, so net/http's
	// buffers are released while the connection idles.
	if !polled {
		go c.readLoop()
	}
	return nil
}

// poll hands c's socket to the node's poller when it can be: a plain TCP
// socket whose read buffer br the relay holds, on a system with a poller.
func (c *conn) poll(br *bufio.Reader) bool {
	tc, ok := c.ws.NetConn().(*net.TCPConn)
	if br == nil || !ok {
		return false
	}
	p := c.s.poller()
	if p == nil {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return false
	}
	// Set before add: the first readiness may be reported at once. Nothing
	// else sees c before Serve publishes it.
	c.br, c.polled = br, p
	if err := p.add(c, fd); err != nil {
		c.br, c.polled = nil, nil
		return false
	}
	return true
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
	// polled is the node's poller when it watches this socket (nil: the
	// read loop goroutine waits on it); br is then gorilla's read buffer,
	// and token and fd are the poller's. Set before the connection is
	// published, then only read.
	polled *poller
	br     *bufio.Reader
	token  uint64
	fd     int
	// alive is when the peer last answered a ping (Unix ns): the read
	// deadline, and for a polled connection the ping timer, drop it when
	// two ping intervals pass without one.
	alive    atomic.Int64
	finished sync.Once
	gone     atomic.Bool // finish has run (set before it leaves the hub)
	// frames limits the frames the device sends (nil: unlimited) and
	// overRate records that it was exceeded; only the read loop uses them.
	frames   *rate.Limiter
	overRate bool
	// serve answers request frames, each in its own goroutine (within
	// slots) under ctx, which cancel ends when the connection starts to
	// close.
	serve  RequestFunc
	ctx    context.Context
	cancel context.CancelFunc
	slots  *requestSlots
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
			ctx, cancel := context.WithTimeout(c.s.reads, 30*time.Second) // not c.ctx: see Service.reads
			envs, err := c.s.store.Pending(ctx, c.account, c.device, cursor, c.s.now(), limit)
			cancel()
			if err != nil && c.isClosing() {
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
	b, err := wire.Encode(f)
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

// setupRead installs the control-frame handlers and the first read
// deadline; a pong extends it by two ping intervals.
func (c *conn) setupRead() {
	wait := 2 * c.s.cfg.PingInterval
	c.alive.Store(time.Now().UnixNano())
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error {
		if !c.allowFrame() { // pongs, even unsolicited ones, are frames too
			return nil
		}
		if !c.isClosing() {
			now := time.Now()
			c.alive.Store(now.UnixNano())
			_ = c.ws.SetReadDeadline(now.Add(wait))
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
}

// readLoop reads frames until the connection ends (unpolled connections).
func (c *conn) readLoop() {
	defer c.finish()
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		c.handle(typ, data)
	}
}

// readable serves what a polled connection's socket has ready (the
// frames already buffered and what one read brings), then gives the
// socket back to the poller. A frame that has arrived in part is waited
// for within the read deadline, as the read loop would. The poller counted
// this goroutine in s.conns.
func (c *conn) readable() {
	defer c.s.conns.Done()
	filled := false
	for {
		kind, err := c.nextFrame(&filled)
		if err != nil {
			c.finish()
			return
		}
		switch kind {
		case frameNone:
			if !c.polled.rearm(c) {
				c.finish() // being removed, or epoll refused: end it either way
			}
			return
		case frameControl:
			continue
		}
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.finish()
			return
		}
		c.handle(typ, data)
	}
}

// The opcodes of the control frames nextFrame answers (RFC 6455 5.5).
const (
	opPing = 0x9
	opPong = 0xA
)

type frameKind int

const (
	frameNone    frameKind = iota // nothing buffered
	frameControl                  // a ping or pong, answered
	frameMessage                  // anything else, for gorilla to read
)

// nextFrame looks at the next frame buffered for a polled connection.
// Pings and pongs are answered here with gorilla's own handlers: given
// one, gorilla would go on to wait for the next data frame, and the
// goroutine would stay parked on an idle socket. Anything else, including
// control frames that break the protocol, is left to gorilla, which reads
// data messages and refuses bad frames. The socket is read at most once
// while nothing is buffered (filled records it): when the poller found it
// readable, so that read does not wait.
func (c *conn) nextFrame(filled *bool) (frameKind, error) {
	if c.br.Buffered() == 0 {
		if *filled {
			return frameNone, nil
		}
		*filled = true
		if _, err := c.br.Peek(1); err != nil {
			return 0, err
		}
	}
	h, _ := c.br.Peek(1) // buffered: does not wait
	if op := h[0] & 0x0f; op != opPing && op != opPong {
		return frameMessage, nil
	}
	h, err := c.br.Peek(2)
	if err != nil {
		return 0, err
	}
	// A client's control frame: final, no extension bits, masked, and a
	// payload of at most 125 bytes, so its header is 2 bytes and a key.
	n := int(h[1] & 0x7f)
	if h[0]&0xf0 != 0x80 || h[1]&0x80 == 0 || n > 125 {
		return frameMessage, nil
	}
	f, err := c.br.Peek(6 + n)
	if err != nil {
		return 0, err
	}
	var payload [125]byte
	for i := range n {
		payload[i] = f[6+i] ^ f[2+(i&3)]
	}
	handler := c.ws.PongHandler()
	if f[0]&0x0f == opPing {
		handler = c.ws.PingHandler()
	}
	_, _ = c.br.Discard(6 + n)
	return frameControl, handler(string(payload[:n]))
}

// handle acts on one data message from the device.
func (c *conn) handle(typ int, data []byte) {
	if !c.allowFrame() {
		return // over the rate: dropped while the close completes
	}
	if typ != websocket.TextMessage {
		c.close(websocket.CloseUnsupportedData, "frames must be JSON text")
		return
	}
	var f wire.Frame
	if err := wire.Decode(data, &f, true); err != nil {
		c.close(websocket.ClosePolicyViolation, "malformed frame")
		return
	}
	switch {
	case f.Type == wire.FrameAck && f.Envelope == nil && len(f.IDs) > 0 && len(f.IDs) <= wire.MaxAckIDs && f.ID == 0 &&
		f.Verb == "" && f.Path == "" && f.Status == 0 && f.Headers == nil && f.Body == nil:
		c.ack(f.IDs)
	case f.Type == wire.FrameRequest && f.Envelope == nil && f.IDs == nil && f.ID > 0 && f.Verb != "" && f.Path != "" && f.Status == 0:
		if !c.isClosing() { // its answer could not be sent: not served, so a retry is safe
			c.request(f, int64(len(data)))
		}
	default:
		c.close(websocket.ClosePolicyViolation, "expected an ack frame with 1 to 1000 ids or a request frame with an id, verb and path")
	}
}

// requestSlots bound a connection's request frames being served:
// wire.MaxRequestsInFlight tokens in count, wire.MaxRequestBytesInFlight
// in bytes. Made at the first request frame, so a connection that sends
// none does not carry them.
type requestSlots struct {
	count chan struct{}
	bytes *semaphore.Weighted
}

// request serves a request frame of size bytes in its own goroutine and
// writes the response. Past the connection's bounds (requestSlots) or the
// node's (Config.RequestBytes) the reader waits, so a client sending
// faster than the relay answers is slowed, not buffered: besides its
// frames being served, a connection holds the one frame it waits with. A
// frame still waiting when the connection starts to close is not served
// (its answer could not be sent, so a retry is safe); a frame's bytes are
// released as soon as it is served, so a client slow to read answers
// holds only its count slots.
func (c *conn) request(f wire.Frame, size int64) {
	if c.slots == nil { // only the goroutine reading the socket comes here
		c.slots = &requestSlots{count: make(chan struct{}, wire.MaxRequestsInFlight), bytes: semaphore.NewWeighted(wire.MaxRequestBytesInFlight)}
	}
	slots := c.slots
	select {
	case slots.count <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	if slots.bytes.Acquire(c.ctx, size) != nil {
		<-slots.count
		return
	}
	if c.s.requestBytes.Acquire(c.ctx, size) != nil {
		slots.bytes.Release(size)
		<-slots.count
		return
	}
	release := func() {
		c.s.requestBytes.Release(size)
		slots.bytes.Release(size)
	}
	if c.ctx.Err() != nil { // Acquire may succeed with a context already done
		release()
		<-slots.count
		return
	}
	c.s.conns.Add(1) // the connection's count is held, so this cannot race Wait
	go func() {
		defer c.s.conns.Done()
		defer func() { <-slots.count }()
		var once sync.Once
		defer once.Do(release)
		defer func() {
			// As net/http does for a request: one failing request must not
			// take the node down.
			if v := recover(); v != nil {
				c.s.log.Error("request frame panicked", "panic", v, "stack", string(debug.Stack()))
				once.Do(release)
				c.write(wire.Frame{Type: wire.FrameResponse, ID: f.ID, Status: http.StatusInternalServerError,
					Body: jsontext.Value(`{"error":{"code":"internal_error","message":"internal error"}}`)})
			}
		}()
		resp := c.serve(c.ctx, accounts.Principal{Account: c.account, Device: c.device}, f)
		once.Do(release)
		resp.Type, resp.ID = wire.FrameResponse, f.ID
		if !c.isClosing() {
			c.write(resp)
		}
	}()
}

// allowFrame takes one frame from the connection's frame budget. The
// first frame over it closes the connection with wire.CloseFrameRate; frames
// over it are dropped. Frames within it are handled even while the
// connection closes, so acks sent during a graceful drain still count.
// Only the goroutine reading the socket calls it (gorilla runs control
// handlers there too).
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
		next := c.s.cfg.PingInterval
		// No read waits on a polled socket for its deadline to end it, so
		// the timer also fires at that deadline: two intervals after the
		// last pong, as the read loop's deadline would.
		if c.polled != nil {
			left := time.Until(time.Unix(0, c.alive.Load()).Add(2 * c.s.cfg.PingInterval))
			if left <= 0 {
				c.abort()
				return
			}
			next = min(next, left)
		}
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
			c.pinger.Reset(next)
		}
		c.mu.Unlock()
	})
}

// removed reports whether the connection's device no longer exists (a
// failed lookup is not taken as removal).
func (c *conn) removed() bool {
	ctx, cancel := context.WithTimeout(c.s.reads, 5*time.Second) // not c.ctx: see Service.reads
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

// close starts a clean close: a close frame now, and the peer has a moment
// to answer before the connection is dropped.
func (c *conn) close(code int, reason string) {
	if !c.markClosing() {
		return
	}
	deadline := time.Now().Add(time.Second)
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		c.drop()
		return
	}
	_ = c.ws.SetReadDeadline(deadline.Add(time.Second))
	if c.polled != nil { // no read waits for that deadline
		time.AfterFunc(2*time.Second, c.drop)
	}
}

// abort drops a broken connection at once.
func (c *conn) abort() {
	c.markClosing()
	c.drop()
}

// drop closes the socket. The read loop then ends the connection; a
// polled connection has no goroutine waiting on its socket, so drop ends
// it itself.
func (c *conn) drop() {
	if c.polled != nil {
		c.finish()
		return
	}
	_ = c.ws.Close()
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

func (c *conn) markClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	// Requests still being served or waiting for room end: their answers
	// would not be sent.
	c.cancel()
	if c.pinger != nil {
		c.pinger.Stop()
	}
	return true
}

// finish ends the connection, once: the socket leaves the poller before
// it closes (see poller).
func (c *conn) finish() {
	c.finished.Do(func() {
		c.markClosing() // ends c.ctx
		if c.polled != nil {
			c.polled.remove(c)
		}
		_ = c.ws.Close()
		c.gone.Store(true)
		c.s.hub.remove(c)
		c.s.conns.Done()
	})
}
