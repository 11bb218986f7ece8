package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/store/postgres/pgtest"
	"github.com/parleyhq/parley/wire"
)

// device is a registered device as a client holds it.
type device struct {
	user, pass, account string
}

func registerDevice(t *testing.T, p *proc, number string) device {
	user, pass := registerFlow(t, p, number, "123456")
	return device{user: user, pass: pass, account: strings.TrimSuffix(user, ".1")}
}

// sendText sends one envelope carrying text to every device (just device 1)
// of `to`, through p, with an idempotency key. It returns the HTTP status,
// or an error when the relay did not answer. The body depends only on text,
// so a retry with the same key is the same request (a relay that stored the
// first attempt but died before answering answers the retry as a replay).
func sendText(p *proc, from device, to device, text, key string) (int, error) {
	body, _ := json.Marshal(map[string]any{"timestamp": 1_700_000_000_000, "messages": []any{map[string]any{
		"device_id": 1, "registration_id": 77, "type": 1, "content": base64.StdEncoding.EncodeToString([]byte(text)),
	}}})
	req, _ := http.NewRequest("PUT", p.base+"/v1/messages/"+to.account, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.SetBasicAuth(from.user, from.pass)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func dialSocket(p *proc, d device) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(d.user+":"+d.pass)))
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.base, "http")+"/v1/websocket", h)
	return ws, err
}

// received is what a receiving device saw: every delivery, by text.
type received struct {
	mu         sync.Mutex
	ids        map[string]map[string]bool // text → server ids
	order      []string                   // texts in delivery order
	deliveries int
	emptyQueue int
}

func (r *received) add(f wire.Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Type == wire.FrameQueueEmpty {
		r.emptyQueue++
		return
	}
	text := string(f.Envelope.Content)
	if r.ids[text] == nil {
		r.ids[text] = map[string]bool{}
	}
	r.ids[text][f.Envelope.ID.String()] = true
	r.order = append(r.order, text)
	r.deliveries++
}

func (r *received) has(text string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids[text]) > 0
}

// arrivedOnce waits until every text in sent has arrived and checks that
// each came under exactly one server id (redeliveries repeat the id).
func (r *received) arrivedOnce(t *testing.T, sent []string) {
	t.Helper()
	waitCond(t, 30*time.Second, "every acknowledged send to arrive", func() bool {
		for _, text := range sent {
			if !r.has(text) {
				return false
			}
		}
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, text := range sent {
		if n := len(r.ids[text]); n != 1 {
			t.Errorf("%q arrived under %d server ids; want exactly 1", text, n)
		}
	}
}

// receive reads and acknowledges envelopes on ws until it breaks.
func (r *received) receive(ws *websocket.Conn) error {
	for {
		var f wire.Frame
		if err := ws.ReadJSON(&f); err != nil {
			return err
		}
		r.add(f)
		if f.Type == wire.FrameEnvelope {
			if err := ws.WriteJSON(wire.Frame{Type: wire.FrameAck, IDs: []uuid.UUID{f.Envelope.ID}}); err != nil {
				return err
			}
		}
	}
}

func waitCond(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Two parleyd processes share one PostgreSQL. Clients on different nodes
// exchange envelopes; then one node is killed with SIGKILL in the middle of
// a stream. Every send that got a 200 must reach the recipient exactly
// once after de-duplication by server id.
func TestTwoNodesAndACrash(t *testing.T) {
	dsn := pgtest.Database(t)
	secret := rootSecretFile(t)
	args := []string{"--database-url", dsn, "--secret-file", secret, "--send-burst", "100000", "--send-rate", "100000"}
	a := start(t, []string{testNumbers}, args...)
	b := start(t, []string{testNumbers}, args...)
	alice := registerDevice(t, a, "+15555550100")
	bob := registerDevice(t, b, "+15555550101")

	// Cross-node delivery both ways: Alice on A, Bob on B.
	wa, err := dialSocket(a, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wb, err := dialSocket(b, bob)
	if err != nil {
		t.Fatal(err)
	}
	atAlice := &received{ids: map[string]map[string]bool{}}
	atBob := &received{ids: map[string]map[string]bool{}}
	go atAlice.receive(wa)
	bobDone := make(chan error, 1)
	go func() { bobDone <- atBob.receive(wb) }()
	waitCond(t, 5*time.Second, "both queues drained", func() bool {
		atAlice.mu.Lock()
		defer atAlice.mu.Unlock()
		atBob.mu.Lock()
		defer atBob.mu.Unlock()
		return atAlice.emptyQueue == 1 && atBob.emptyQueue == 1
	})
	if st, err := sendText(a, alice, bob, "hello from node A", "hello-1"); st != 200 {
		t.Fatalf("send via A: %d %v", st, err)
	}
	waitCond(t, 5*time.Second, "Bob (on B) to receive Alice's envelope sent via A", func() bool { return atBob.has("hello from node A") })
	if st, err := sendText(b, bob, alice, "hello from node B", "hello-2"); st != 200 {
		t.Fatalf("send via B: %d %v", st, err)
	}
	waitCond(t, 5*time.Second, "Alice (on A) to receive Bob's envelope sent via B", func() bool { return atAlice.has("hello from node B") })

	// A stream from Alice to Bob, alternating nodes; B is killed midway.
	// A send that fails is retried through A with the same idempotency key.
	const total = 400
	var (
		mu      sync.Mutex
		ok200   []string
		crashed bool
	)
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for i := range total {
			text := fmt.Sprintf("stream %d", i)
			key := fmt.Sprintf("stream-%d", i)
			via := a
			mu.Lock()
			if i%2 == 1 && !crashed {
				via = b
			}
			mu.Unlock()
			for attempt := 0; ; attempt++ {
				st, err := sendText(via, alice, bob, text, key)
				if err == nil && st == 200 {
					mu.Lock()
					ok200 = append(ok200, text)
					mu.Unlock()
					break
				}
				if attempt == 20 {
					t.Errorf("%s: no 200 after 20 attempts (last %d, %v)", text, st, err)
					return
				}
				via = a
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	waitCond(t, 30*time.Second, "the stream to be under way", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ok200) >= total/4
	})
	b.cmd.Process.Kill() // SIGKILL: no shutdown, no flush
	<-b.done
	mu.Lock()
	crashed = true
	sentBeforeCrash := len(ok200)
	mu.Unlock()
	if err := <-bobDone; err == nil {
		t.Fatal("Bob's socket on the killed node did not break")
	}
	// Bob reconnects to the surviving node and receives the rest.
	wb2, err := dialSocket(a, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer wb2.Close()
	go atBob.receive(wb2)
	<-streamDone
	mu.Lock()
	sent := append([]string(nil), ok200...)
	mu.Unlock()
	if len(sent) != total {
		t.Fatalf("only %d of %d sends got a 200", len(sent), total)
	}
	atBob.arrivedOnce(t, sent)
	atBob.mu.Lock()
	defer atBob.mu.Unlock()
	t.Logf("%d sends got a 200 (%d before the SIGKILL); Bob saw %d deliveries (%d redeliveries, removed by id)",
		len(sent), sentBeforeCrash, atBob.deliveries, atBob.deliveries-len(sent)-1)
	a.stop()
}

// A freshly stored envelope is handed straight to a connection that has
// delivered everything before it, else the connection reads its queue.
// Sends alternating between two nodes (each answered before the next)
// reach a device connected to one of them in the order they were sent:
// node A must not hand off its envelope while B's earlier one is still
// unread, and several senders at once each keep their order on one node.
func TestHandOffKeepsOrder(t *testing.T) {
	dsn := pgtest.Database(t)
	secret := rootSecretFile(t)
	args := []string{"--database-url", dsn, "--secret-file", secret, "--send-burst", "100000", "--send-rate", "100000"}
	numbers := testNumbers + ",+15555550102=123456"
	a := start(t, []string{numbers}, args...)
	b := start(t, []string{numbers}, args...)
	alice := registerDevice(t, a, "+15555550100")
	bob := registerDevice(t, a, "+15555550101")
	carol := registerDevice(t, b, "+15555550102")
	wb, err := dialSocket(a, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()
	atBob := &received{ids: map[string]map[string]bool{}}
	go atBob.receive(wb)
	waitCond(t, 5*time.Second, "Bob's queue drained", func() bool {
		atBob.mu.Lock()
		defer atBob.mu.Unlock()
		return atBob.emptyQueue == 1
	})
	const n = 100
	var want []string
	for i := range n {
		via := []*proc{a, b}[i%2]
		text := fmt.Sprintf("alternating %03d", i)
		if st, err := sendText(via, alice, bob, text, strings.ReplaceAll(text, " ", "_")); st != 200 {
			t.Fatalf("%s: %d %v", text, st, err)
		}
		want = append(want, text)
	}
	// Two senders at once through each node, each in its own order.
	var wg sync.WaitGroup
	for _, c := range []struct {
		from device
		via  *proc
	}{{alice, a}, {carol, b}, {carol, a}, {alice, b}} {
		wg.Go(func() {
			for i := range n {
				text := fmt.Sprintf("%s via %s %03d", c.from.account[:8], c.via.base, i)
				if st, err := sendText(c.via, c.from, bob, text, strings.ReplaceAll(text, " ", "_")); st != 200 {
					t.Errorf("%s: %d %v", text, st, err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitCond(t, 20*time.Second, "every envelope to arrive", func() bool {
		atBob.mu.Lock()
		defer atBob.mu.Unlock()
		return len(atBob.ids) == 5*n
	})
	atBob.mu.Lock()
	defer atBob.mu.Unlock()
	if atBob.deliveries != 5*n {
		t.Errorf("%d deliveries of %d envelopes", atBob.deliveries, 5*n)
	}
	if got := atBob.order[:n]; !slices.Equal(got, want) {
		t.Errorf("alternating sends arrived as %v", got)
	}
	last := map[string]string{}
	for _, text := range atBob.order[n:] {
		stream := text[:len(text)-4]
		if text <= last[stream] {
			t.Errorf("%q arrived after %q", text, last[stream])
		}
		last[stream] = text
	}
}

// SIGTERM closes sockets with "going away" and loses nothing: what was
// delivered but not acknowledged comes again after the restart.
func TestGracefulShutdownLosesNothing(t *testing.T) {
	dir := t.TempDir()
	p := start(t, []string{testNumbers}, "--data-dir", dir)
	alice := registerDevice(t, p, "+15555550100")
	bob := registerDevice(t, p, "+15555550101")
	for i := range 20 {
		if st, err := sendText(p, alice, bob, fmt.Sprint("before shutdown ", i), fmt.Sprint("k", i)); st != 200 {
			t.Fatalf("send: %d %v", st, err)
		}
	}
	ws, err := dialSocket(p, bob)
	if err != nil {
		t.Fatal(err)
	}
	// Acknowledge the first 5 only.
	for i := range 20 {
		var f wire.Frame
		if err := ws.ReadJSON(&f); err != nil || f.Type != wire.FrameEnvelope {
			t.Fatalf("frame %d: %+v %v", i, f, err)
		}
		if i < 5 {
			ws.WriteJSON(wire.Frame{Type: wire.FrameAck, IDs: []uuid.UUID{f.Envelope.ID}})
		}
	}
	var f wire.Frame
	if err := ws.ReadJSON(&f); err != nil || f.Type != wire.FrameQueueEmpty {
		t.Fatalf("want queue_empty: %+v %v", f, err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	err = ws.ReadJSON(&f)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Errorf("on SIGTERM the socket ended with %v; want close 1001", err)
	}
	if err := <-p.done; err != nil {
		t.Fatalf("parleyd exited uncleanly: %v\n%s", err, p.logs)
	}
	p = start(t, []string{testNumbers}, "--data-dir", dir)
	ws, err = dialSocket(p, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var again []string
	for {
		if err := ws.ReadJSON(&f); err != nil {
			t.Fatal(err)
		}
		if f.Type == wire.FrameQueueEmpty {
			break
		}
		again = append(again, string(f.Envelope.Content))
	}
	if len(again) != 15 || again[0] != "before shutdown 5" || again[14] != "before shutdown 19" {
		t.Errorf("after the restart Bob got %d envelopes (%q…); want the 15 unacknowledged ones in order", len(again), again)
	}
	p.stop()
}

// SIGKILL at full load, on both engines: many senders at once (so sends
// are stored in shared batches), the recipient receiving and acknowledging
// meanwhile. After a restart on the same database every send that got a
// 200 reaches the recipient, once after de-duplication by id.
func TestKillAtFullLoad(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			args := append(storageArgs(t, backend), "--send-burst", "100000", "--send-rate", "100000")
			p := start(t, []string{testNumbers}, args...)
			alice := registerDevice(t, p, "+15555550100")
			bob := registerDevice(t, p, "+15555550101")
			ws, err := dialSocket(p, bob)
			if err != nil {
				t.Fatal(err)
			}
			atBob := &received{ids: map[string]map[string]bool{}}
			go atBob.receive(ws)

			var mu sync.Mutex
			var ok200 []string
			var wg sync.WaitGroup
			for s := range 16 {
				wg.Go(func() {
					for i := 0; ; i++ {
						text := fmt.Sprintf("sender %02d message %04d", s, i)
						st, err := sendText(p, alice, bob, text, strings.ReplaceAll(text, " ", "_"))
						if err != nil {
							return // the relay is gone
						}
						if st == 200 {
							mu.Lock()
							ok200 = append(ok200, text)
							mu.Unlock()
						}
					}
				})
			}
			waitCond(t, 30*time.Second, "sends under way", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(ok200) >= 300
			})
			p.cmd.Process.Kill() // SIGKILL: no shutdown, no flush
			<-p.done
			wg.Wait()
			ws.Close()

			q := start(t, []string{testNumbers}, args...)
			ws2, err := dialSocket(q, bob)
			if err != nil {
				t.Fatal(err)
			}
			defer ws2.Close()
			go atBob.receive(ws2)
			mu.Lock()
			sent := append([]string(nil), ok200...)
			mu.Unlock()
			atBob.arrivedOnce(t, sent)
			atBob.mu.Lock()
			defer atBob.mu.Unlock()
			t.Logf("%s: %d sends answered 200 before the SIGKILL, all delivered after the restart (%d deliveries)", backend, len(sent), atBob.deliveries)
			q.stop()
		})
	}
}

// TestRelayMetrics: the metrics endpoint shows the relay's commits, its
// open sockets and the ones waiting in the poller.
func TestRelayMetrics(t *testing.T) {
	p := start(t, []string{testNumbers}, "--data-dir", t.TempDir())
	alice, bob := registerDevice(t, p, "+15555550100"), registerDevice(t, p, "+15555550101")
	ws, err := dialSocket(p, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	got := &received{ids: map[string]map[string]bool{}}
	go got.receive(ws)
	if st, err := sendText(p, alice, bob, "counted", "k1"); err != nil || st != 200 {
		t.Fatalf("send: %d %v", st, err)
	}
	waitCond(t, 5*time.Second, "delivery", func() bool { return got.has("counted") })
	waitCond(t, 5*time.Second, "the ack's batch", func() bool { return metric(t, p, "parley_relay_committed_acks_total") >= 1 })
	if n := metric(t, p, "parley_relay_commit_seconds_count"); n < 2 {
		t.Errorf("parley_relay_commit_seconds_count = %v, want the send's batch and the ack's", n)
	}
	if n := metric(t, p, "parley_relay_committed_sends_total"); n != 1 {
		t.Errorf("parley_relay_committed_sends_total = %v, want 1", n)
	}
	if n := metric(t, p, "parley_relay_connections"); n != 1 {
		t.Errorf("parley_relay_connections = %v, want 1", n)
	}
	if n := metric(t, p, "parley_relay_commit_sends_count"); n != 1 {
		t.Errorf("parley_relay_commit_sends_count = %v, want 1 batch with sends", n)
	}
	if n := metric(t, p, "parley_relay_polled_connections"); runtime.GOOS == "linux" && n != 1 {
		t.Errorf("parley_relay_polled_connections = %v, want 1 (plain TCP on Linux)", n)
	}
	ws.Close()
	waitCond(t, 5*time.Second, "the socket to go", func() bool {
		return metric(t, p, "parley_relay_connections") == 0 && metric(t, p, "parley_relay_polled_connections") == 0
	})
}
