package relay_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/wire"
)

// slowServer is a relay whose request frames are served by a function
// that holds each until release closes, recording how many of each
// account's it holds at once.
type slowServer struct {
	t       *testing.T
	url     string
	release chan struct{}
	served  chan uuid.UUID

	mu       sync.Mutex
	inflight map[uuid.UUID]int
	most     map[uuid.UUID]int
}

func newSlowServer(t *testing.T, requestBytes int64) *slowServer {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.RequestBytes = requestBytes
	svc := relay.New(cfg, db, relay.LocalBus{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	s := &slowServer{t: t, release: make(chan struct{}), served: make(chan uuid.UUID, 64),
		inflight: map[uuid.UUID]int{}, most: map[uuid.UUID]int{}}
	serve := func(ctx context.Context, p accounts.Principal, f wire.Frame) wire.Frame {
		s.mu.Lock()
		s.inflight[p.Account]++
		s.most[p.Account] = max(s.most[p.Account], s.inflight[p.Account])
		s.mu.Unlock()
		s.served <- p.Account
		select {
		case <-s.release:
		case <-ctx.Done():
		}
		s.mu.Lock()
		s.inflight[p.Account]--
		s.mu.Unlock()
		return wire.Frame{Status: http.StatusOK}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		p := accounts.Principal{Account: uuid.MustParse(r.URL.Query().Get("account")), Device: 1}
		if err := svc.Serve(ws, nil, p, serve); err != nil {
			ws.Close()
		}
	}))
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		srv.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := svc.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		db.Close()
	})
	return s
}

// client connects as account and sends n request frames of about size
// bytes; it returns a channel of the responses' ids.
func (s *slowServer) client(account uuid.UUID, n, size int) chan uint64 {
	s.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(s.url+"/?account="+account.String(), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { ws.Close() })
	responses := make(chan uint64, n)
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f wire.Frame
			if json.Unmarshal(data, &f) == nil && f.Type == wire.FrameResponse {
				responses <- f.ID
			}
		}
	}()
	// Written from a goroutine: frames past the budget wait for the relay
	// to read them, and may not all fit in the socket's buffers.
	body := `"` + strings.Repeat("x", size) + `"`
	go func() {
		for i := range n {
			f := `{"type":"request","id":` + strconv.Itoa(i+1) + `,"verb":"PUT","path":"/v1/messages/x","body":` + body + `}`
			if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				return // the test ended, or the relay closed the socket
			}
		}
	}()
	return responses
}

// wait takes n servings from s, failing after a few seconds.
func (s *slowServer) wait(n int) {
	s.t.Helper()
	for range n {
		select {
		case <-s.served:
		case <-time.After(5 * time.Second):
			s.t.Fatalf("fewer than %d request frames were served", n)
		}
	}
}

// none checks that nothing more is served while s holds what it has;
// why says what serving one would break.
func (s *slowServer) none(why string) {
	s.t.Helper()
	select {
	case <-s.served:
		s.t.Fatal("a request frame was served " + why)
	case <-time.After(300 * time.Millisecond):
	}
}

// mostAtOnce is how many of account's frames were served at once.
func (s *slowServer) mostAtOnce(account uuid.UUID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.most[account]
}

func answered(t *testing.T, responses chan uint64, n int) {
	t.Helper()
	for range n {
		select {
		case <-responses:
		case <-time.After(5 * time.Second):
			t.Fatalf("fewer than %d responses once the frames were let go", n)
		}
	}
}

// TestRequestFrameBytesPerConnection: one connection's request frames are
// served up to wire.MaxRequestBytesInFlight at once; the rest wait, and
// are served once those finish.
func TestRequestFrameBytesPerConnection(t *testing.T) {
	s := newSlowServer(t, 64<<20)
	a := uuid.New()
	const size = 900 << 10 // four fit in 4 MiB, five do not
	responses := s.client(a, 6, size)
	s.wait(4)
	s.none("past its budget")
	close(s.release)
	answered(t, responses, 6)
	if got := s.mostAtOnce(a); got != wire.MaxRequestBytesInFlight/(size+100) {
		t.Errorf("%d frames of %d bytes were served at once, want %d", got, size, wire.MaxRequestBytesInFlight/(size+100))
	}
}

// TestRequestFrameBytesPerNode: the node's budget (Config.RequestBytes)
// holds every connection's frames together: a second connection waits while
// the first holds it, and is served when it frees.
func TestRequestFrameBytesPerNode(t *testing.T) {
	s := newSlowServer(t, 2<<20)
	a, b := uuid.New(), uuid.New()
	ra := s.client(a, 3, 1000<<10) // two fit in 2 MiB
	s.wait(2)
	s.none("past its budget")
	rb := s.client(b, 1, 100<<10) // not in the 48 KiB left
	s.none("past its budget")
	close(s.release)
	answered(t, ra, 3)
	answered(t, rb, 1)
	if got := s.mostAtOnce(a); got != 2 {
		t.Errorf("%d of the first connection's 1000 KiB frames were served at once in a 2 MiB budget, want 2", got)
	}
}

// TestRequestFramesInFlightPerConnection: at most wire.MaxRequestsInFlight
// of one connection's request frames are served at once, however small.
func TestRequestFramesInFlightPerConnection(t *testing.T) {
	s := newSlowServer(t, 64<<20)
	a := uuid.New()
	responses := s.client(a, wire.MaxRequestsInFlight+4, 10)
	s.wait(wire.MaxRequestsInFlight)
	s.none("past its budget")
	close(s.release)
	answered(t, responses, wire.MaxRequestsInFlight+4)
	if got := s.mostAtOnce(a); got != wire.MaxRequestsInFlight {
		t.Errorf("%d small frames were served at once, want %d", got, wire.MaxRequestsInFlight)
	}
}

// TestWaitingRequestFrameDroppedWhenTheConnectionCloses: a request frame
// waiting for room when its connection starts to close (here: replaced by
// a newer one) is not served, as its answer could not be sent; a client
// retries it safely.
func TestWaitingRequestFrameDroppedWhenTheConnectionCloses(t *testing.T) {
	s := newSlowServer(t, wire.MaxClientFrame)
	a, b := uuid.New(), uuid.New()
	ra := s.client(a, 1, 1000<<10) // holds the node's budget
	s.wait(1)
	s.client(b, 1, 100<<10) // waits for room
	s.none("past its budget")
	s.client(b, 0, 0) // replaces b's first connection
	time.Sleep(100 * time.Millisecond)
	close(s.release)
	answered(t, ra, 1)
	s.none("after its connection closed")
	if got := s.mostAtOnce(b); got != 0 {
		t.Errorf("%d of the replaced connection's frames were served after it closed", got)
	}
}
