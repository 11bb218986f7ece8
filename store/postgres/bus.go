package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/relay"
)

// channel is the LISTEN/NOTIFY channel relay nodes share.
const channel = "parley_relay"

// maxPayload stays under PostgreSQL's 8000-byte NOTIFY payload limit.
const maxPayload = 7900

// maxPending bounds events waiting to be sent; past it the bus sends one
// resync instead, so memory stays bounded and nothing stays stuck.
const maxPending = 100_000

// Bus is a relay.Bus over PostgreSQL LISTEN/NOTIFY: one listening
// connection and one notifying connection per node, outside every write
// transaction, with events coalesced into as few notifications as fit.
type Bus struct {
	dsn  string
	log  *slog.Logger
	node string

	mu       sync.Mutex
	pending  []string
	overflow bool
	signal   chan struct{}

	// Listening reports each (re)established LISTEN; tests use it.
	Listening func()
}

var _ relay.Bus = (*Bus)(nil)

// NewBus returns a Bus for the database at dsn.
func NewBus(dsn string, log *slog.Logger) *Bus {
	id := make([]byte, 8)
	rand.Read(id)
	return &Bus{dsn: dsn, log: log, node: hex.EncodeToString(id), signal: make(chan struct{}, 1)}
}

// Publish implements relay.Bus.
func (b *Bus) Publish(ev relay.Event) {
	line := ev.Encode()
	b.mu.Lock()
	if len(b.pending) >= maxPending || len(line) > maxPayload-len(b.node)-1 {
		b.overflow = true
	} else {
		b.pending = append(b.pending, line)
	}
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

// Run implements relay.Bus: it listens for other nodes' events and sends
// this node's until ctx ends.
func (b *Bus) Run(ctx context.Context, deliver func([]relay.Event), resync func()) error {
	var wg sync.WaitGroup
	wg.Go(func() { b.notify(ctx) })
	b.listen(ctx, deliver, resync)
	wg.Wait()
	return nil
}

func (b *Bus) connect(ctx context.Context, role string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(b.dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = "parleyd-bus-" + role
	return pgx.ConnectConfig(ctx, cfg)
}

// listen holds the LISTEN connection, reconnecting with backoff; after each
// (re)connect it asks for a resync, since events sent while it was away
// are lost.
func (b *Bus) listen(ctx context.Context, deliver func([]relay.Event), resync func()) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		conn, err := b.connect(ctx, "listen")
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN "+channel); err != nil {
				conn.Close(context.Background())
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("relay bus: cannot listen; retrying", "err", err, "in", backoff.next())
				backoff.wait(ctx)
			}
			continue
		}
		backoff.reset()
		resync()
		if b.Listening != nil {
			b.Listening()
		}
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("relay bus: lost the listening connection; reconnecting", "err", err)
				}
				break
			}
			if evs := b.parse(n.Payload); len(evs) > 0 {
				deliver(evs)
			}
		}
		conn.Close(context.Background())
	}
}

// parse decodes a payload, ignoring this node's own and malformed lines.
func (b *Bus) parse(payload string) []relay.Event {
	node, body, ok := strings.Cut(payload, "\n")
	if !ok || node == b.node {
		return nil
	}
	var evs []relay.Event
	for line := range strings.SplitSeq(body, "\n") {
		ev, err := relay.ParseEvent(line)
		if err != nil {
			b.log.Warn("relay bus: ignoring a malformed event", "err", err)
			continue
		}
		evs = append(evs, ev)
	}
	return evs
}

// notify sends pending events, as many per notification as fit. While one
// notification is in flight, new events gather for the next: coalescing
// grows with load without delaying a lone event.
func (b *Bus) notify(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	backoff := newBackoff()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.signal:
		}
		b.mu.Lock()
		lines, overflow := b.pending, b.overflow
		b.pending, b.overflow = nil, false
		b.mu.Unlock()
		if overflow {
			lines = []string{relay.Event{Kind: relay.EventResync}.Encode()}
		}
		if len(lines) == 0 {
			continue
		}
		for _, p := range b.payloads(lines) {
			var err error
			for attempt := 0; attempt < 2; attempt++ {
				if conn == nil || conn.IsClosed() {
					if conn, err = b.connect(ctx, "notify"); err != nil {
						conn = nil
						continue
					}
				}
				if _, err = conn.Exec(ctx, "SELECT pg_notify($1, $2)", channel, p); err == nil {
					break
				}
				conn.Close(context.Background())
				conn = nil
			}
			if err != nil && ctx.Err() == nil {
				// Other nodes will be told to resync once the database
				// answers again.
				b.log.Warn("relay bus: cannot notify; will resync the other nodes", "err", err, "in", backoff.next())
				b.mu.Lock()
				b.overflow = true
				b.mu.Unlock()
				backoff.wait(ctx)
				select {
				case b.signal <- struct{}{}:
				default:
				}
				break
			}
			backoff.reset()
		}
	}
}

// payloads packs lines into notifications of at most maxPayload bytes,
// each starting with this node's id.
func (b *Bus) payloads(lines []string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range lines {
		if cur.Len() > 0 && cur.Len()+1+len(l) > maxPayload {
			out = append(out, cur.String())
			cur.Reset()
		}
		if cur.Len() == 0 {
			cur.WriteString(b.node)
		}
		cur.WriteByte('\n')
		cur.WriteString(l)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// backoff is an exponential reconnect delay from 100 ms to 5 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) next() time.Duration { return b.d }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.d = min(2*b.d, 5*time.Second)
}
