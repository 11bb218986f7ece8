package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/wire"
)

// Idle connections: on Linux a plain TCP socket waits in the relay's
// poller with no goroutine of its own; a TLS socket (terminated by the
// relay) keeps one. Both must behave the same to the client, which these
// tests check in both modes.

// inBothModes runs test on a plain TCP socket, polled, and on one with
// TLS terminated by the relay, which keeps a goroutine.
func inBothModes(t *testing.T, test func(t *testing.T, mode []envOption)) {
	t.Run("plain TCP, polled", func(t *testing.T) { test(t, nil) })
	t.Run("TLS", func(t *testing.T) { test(t, []envOption{withTLS}) })
}

// manyDevices lets a test register n devices of its own numbers.
func manyDevices(n int) envOption {
	return func(c *envConfig) {
		c.verify.PerIP = ratelimit.Rule{Burst: n + 10, Every: time.Minute}
		for i := range n {
			c.verify.TestNumbers[idleNumber(i)] = testCode
		}
	}
}

func idleNumber(i int) string { return fmt.Sprintf("+4420794602%02d", i) }

// fastPings makes the relay ping every 200 ms, so a peer that does not
// answer is dropped after 400 (a loaded machine running -race may delay an
// answer by a good part of that).
func fastPings(c *envConfig) { c.relay.PingInterval = 200 * time.Millisecond }

func withTLS(c *envConfig) { c.tls = true }

// connGoroutines counts goroutines running the relay's per-connection
// code (read loop, queue reads, request frames).
func connGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("parley/relay.(*conn)")) {
			n++
		}
	}
	return n
}

// answerPings reads s until it ends, so its client answers the relay's
// pings as a live device would.
func answerPings(s *socket) {
	go func() {
		for {
			if _, _, err := s.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
}

// TestIdleConnectionsHoldNoGoroutine: devices that answer pings and send
// nothing else stay connected, and on a plain socket none of them keeps a
// goroutine in the relay; with TLS each keeps its read loop.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 12
	for _, mode := range []struct {
		name string
		opts []envOption
		max  int // goroutines the idle connections may hold
	}{
		{"plain TCP, polled", nil, n / 3},
		{"TLS, a goroutine each", []envOption{withTLS}, n},
	} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, append(mode.opts, manyDevices(n), fastPings)...)
			for i := range n {
				_, c := e.register(idleNumber(i), 0)
				s := e.connect(c)
				s.drain()
				answerPings(s)
			}
			time.Sleep(time.Second) // five ping rounds
			if got := e.relay.Connections(); got != n {
				t.Fatalf("%d of %d connections that answer pings were dropped", n-got, n)
			}
			// A goroutine that serves a pong is brief; the fewest seen
			// over several looks is what idling holds.
			least := connGoroutines()
			for range 20 {
				time.Sleep(5 * time.Millisecond)
				least = min(least, connGoroutines())
			}
			if least > mode.max {
				t.Errorf("%d idle connections hold %d goroutines, want at most %d", n, least, mode.max)
			}
			if mode.max == n && least < n {
				t.Errorf("TLS connections hold %d goroutines, want %d: is TLS polled now? Then its buffered plaintext can stall", least, n)
			}
		})
	}
}

// TestSilentPeerIsDropped: a device that stops answering pings loses its
// connection two ping intervals after its last answer (README: "closed
// after 60 s silent"), polled or not.
func TestSilentPeerIsDropped(t *testing.T) {
	const interval = 500 * time.Millisecond
	errSilent := errors.New("silent from now on")
	inBothModes(t, func(t *testing.T, mode []envOption) {
		e := newEnv(t, append(mode, func(c *envConfig) { c.relay.PingInterval = interval })...)
		_, alice := e.register(aliceNumber, 0)
		s := e.connect(alice)
		s.drain()
		// Answer the first ping a little late (so the deadline falls
		// between two of the relay's pings), then never read again.
		answered := make(chan time.Time, 1)
		s.ws.SetPingHandler(func(data string) error {
			time.Sleep(interval / 5)
			if err := s.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second)); err != nil {
				return err
			}
			answered <- time.Now()
			return errSilent
		})
		go s.ws.ReadMessage()
		last := <-answered
		waitFor(t, func() bool { return e.relay.Connections() == 0 })
		// Early is wrong, and so is late by most of an interval (the
		// relay must not wait for its next ping to find the deadline
		// passed).
		if took := time.Since(last); took < 2*interval-50*time.Millisecond || took > 2*interval+interval/2 {
			t.Errorf("a socket silent since its last pong was dropped after %v, want about %v", took, 2*interval)
		}
		if err := s.ws.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(s.ws.NetConn()); err != nil { // pings, then the end of the stream
			t.Fatalf("the relay kept the socket open: %v", err)
		}
	})
}

// clientFrame is one client frame laid out as RFC 6455 section 5.2 has it:
// first is its first byte (FIN, RSV and opcode), and a client's frames are
// masked unless masked is false.
func clientFrame(first byte, masked bool, payload []byte) []byte {
	var f []byte
	f = append(f, first)
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, mask|byte(n))
	case n <= 0xffff:
		f = append(f, mask|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mask|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if !masked {
		return append(f, payload...)
	}
	key := make([]byte, 4)
	rand.Read(key)
	f = append(f, key...)
	for i, b := range payload {
		f = append(f, b^key[i&3])
	}
	return f
}

// First bytes of client frames: FIN, RSV1 and the opcode.
const (
	finText      = 0x81
	fragmentText = 0x01 // the first fragment of a text message
	finCont      = 0x80
	finPing      = 0x89
	finPong      = 0x8A
	rsv1Ping     = 0xC9
	fragmentPing = 0x09 // forbidden: control frames may not be fragmented
)

// TestControlFramesOnAnIdleSocket: the frames a polled socket's reader
// answers itself (pings and pongs between messages) work when they arrive
// in pieces, together with a message, or inside a fragmented message; and
// ones that break the protocol close the socket as gorilla would.
func TestControlFramesOnAnIdleSocket(t *testing.T) {
	request := []byte(`{"type":"request","id":7,"verb":"PUT","path":"/v1/messages/not-an-account","body":{}}`)
	inBothModes(t, func(t *testing.T, mode []envOption) {
		e := newEnv(t, mode...)
		_, alice := e.register(aliceNumber, 0)
		open := func() (*socket, chan string, chan wire.Frame, chan error) {
			s := e.connect(alice)
			s.drain()
			pongs, frames, ended := make(chan string, 8), make(chan wire.Frame, 8), make(chan error, 1)
			s.ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
			go func() {
				for {
					f, err := s.next(time.Minute)
					if err != nil {
						ended <- err
						return
					}
					frames <- f
				}
			}()
			return s, pongs, frames, ended
		}
		// raw writes bytes to the socket in pieces, pausing between
		// them so that each arrives on its own.
		raw := func(s *socket, pieces ...[]byte) {
			t.Helper()
			for i, p := range pieces {
				if i > 0 {
					time.Sleep(30 * time.Millisecond)
				}
				if _, err := s.ws.NetConn().Write(p); err != nil {
					t.Fatal(err)
				}
			}
		}
		pong := func(pongs chan string, want string) {
			t.Helper()
			select {
			case got := <-pongs:
				if got != want {
					t.Errorf("pong %q, want %q", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no pong for ping %q", want)
			}
		}
		response := func(frames chan wire.Frame) {
			t.Helper()
			select {
			case f := <-frames:
				if f.Type != wire.FrameResponse || f.ID != 7 || f.Status < 400 {
					t.Errorf("want an error response to request 7, got %+v", f)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request frame was not answered")
			}
		}

		s, pongs, frames, _ := open()
		p := clientFrame(finPing, true, []byte("in pieces"))
		raw(s, p[:1], p[1:2], p[2:5], p[5:])
		pong(pongs, "in pieces")

		pingThenRequest := append(clientFrame(finPing, true, []byte("first")), clientFrame(finText, true, request)...)
		raw(s, pingThenRequest)
		pong(pongs, "first")
		response(frames)

		// A message in two fragments with a ping between them, and
		// an unsolicited pong, all in one write.
		var b []byte
		b = append(b, clientFrame(fragmentText, true, request[:20])...)
		b = append(b, clientFrame(finPing, true, []byte("inside"))...)
		b = append(b, clientFrame(finCont, true, request[20:])...)
		b = append(b, clientFrame(finPong, true, bytes.Repeat([]byte("p"), 125))...)
		raw(s, b)
		pong(pongs, "inside")
		response(frames)

		big := clientFrame(finPing, true, bytes.Repeat([]byte("x"), 125))
		raw(s, big[:70], big[70:])
		pong(pongs, strings.Repeat("x", 125))

		for name, bad := range map[string][]byte{
			"an unmasked ping":       clientFrame(finPing, false, []byte("x")),
			"a ping of 126 bytes":    clientFrame(finPing, true, bytes.Repeat([]byte("x"), 126)),
			"a ping with RSV1":       clientFrame(rsv1Ping, true, []byte("x")),
			"a fragmented ping":      clientFrame(fragmentPing, true, []byte("x")),
			"a continuation at rest": clientFrame(finCont, true, []byte("x")),
		} {
			s, _, _, ended := open()
			raw(s, bad)
			select {
			case err := <-ended:
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
					t.Errorf("%s: the socket ended with %v, want close %d", name, err, websocket.CloseProtocolError)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s: the socket stayed open", name)
			}
		}
	})
}

// TestBurstPastTheReadBuffer: many frames in one write, far more than the
// 512-byte read buffer holds, then a ping: the reader serves what is
// buffered and what is left in the kernel, and answers everything.
func TestBurstPastTheReadBuffer(t *testing.T) {
	e := newEnv(t)
	_, alice := e.register(aliceNumber, 0)
	s := e.connect(alice)
	s.drain()
	pongs := make(chan string, 1)
	s.ws.SetPongHandler(func(d string) error { pongs <- d; return nil })
	const n = 40
	var b []byte
	for i := 1; i <= n; i++ {
		req := fmt.Sprintf(`{"type":"request","id":%d,"verb":"PUT","path":"/v1/messages/not-an-account","body":{}}`, i)
		b = append(b, clientFrame(finText, true, []byte(req))...)
	}
	b = append(b, clientFrame(finPing, true, []byte("after"))...)
	if _, err := s.ws.NetConn().Write(b); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; {
		f, err := s.next(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d responses: %v", got, n, err)
		}
		if f.Type == wire.FrameResponse {
			got++
		}
	}
	select {
	case p := <-pongs:
		if p != "after" {
			t.Errorf("pong %q, want %q", p, "after")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong for the ping after the burst")
	}
}

// TestUnansweredCloseIsDropped: a device that does not answer the relay's
// close frame (it has stopped reading) loses its socket a moment later,
// polled or not, and the relay's shutdown does not wait for it.
func TestUnansweredCloseIsDropped(t *testing.T) {
	inBothModes(t, func(t *testing.T, mode []envOption) {
		e := newEnv(t, mode...)
		_, alice := e.register(aliceNumber, 0)
		s := e.connect(alice)
		s.drain() // and never read again
		e.relay.Disconnect(uuid.MustParse(alice.Account), alice.Device)
		start := time.Now()
		waitFor(t, func() bool { return e.relay.Connections() == 0 })
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a socket that did not answer the close was dropped after %v, want about 2 s", took)
		}
		_, bob := e.register(bobNumber, 0)
		e.connect(bob).drain() // and never read again
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		if err := e.relay.Shutdown(ctx); err != nil {
			t.Errorf("shutdown with a socket that does not answer its close: %v", err)
		}
	})
}

// FuzzSocketBytes writes arbitrary bytes on a device's socket after the
// handshake, where a polled socket's reader parses control-frame headers
// itself before gorilla: the relay must not panic (a panic in its
// goroutines ends the test binary), and it must not close for a reason of
// its own (an internal error, going away, a replacement); the input may
// hold a close frame, whose code the relay echoes, so other codes pass.
func FuzzSocketBytes(f *testing.F) {
	shared := newEnv(f, func(c *envConfig) { c.relay.ReconnectBurst, c.relay.ReconnectInterval = 1<<30, time.Nanosecond })
	_, alice := shared.register(aliceNumber, 0)
	ack := []byte(`{"type":"ack","ids":["00000000-0000-4000-8000-000000000000"]}`)
	for _, seed := range [][]byte{
		clientFrame(finPing, true, []byte("p")),
		clientFrame(finPong, true, nil),
		clientFrame(finPing, true, []byte("half"))[:5],
		append(clientFrame(finPing, true, nil), clientFrame(finText, true, ack)...),
		append(clientFrame(fragmentText, true, ack[:9]), clientFrame(finCont, true, ack[9:])...),
		clientFrame(finPing, false, []byte("unmasked")),
		{0x89, 0xfe, 0, 0},
		clientFrame(0x88, true, nil),                // a close without a code: echoed as 1005
		clientFrame(0x88, true, []byte{0x03, 0xe8}), // a close with 1000: echoed
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e := *shared
		e.t = t
		s := e.connect(alice)
		s.drain()
		if _, err := s.ws.NetConn().Write(data); err != nil {
			return
		}
		for {
			_, err := s.next(100 * time.Millisecond)
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				switch ce.Code {
				case websocket.CloseInternalServerErr, websocket.CloseGoingAway, wire.CloseReplaced, wire.CloseDeviceRemoved:
					t.Fatalf("bytes %x: closed with %d", data, ce.Code)
				}
				return
			case err != nil: // nothing more within the wait: a frame waits for its rest, or none was sent
				s.ws.Close()
				return
			}
		}
	})
}
