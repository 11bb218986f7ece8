// Package provisioning carries the one message that turns a new device into
// a linked device of an existing account.
//
// The new device opens the provisioning socket and is given a random
// address; it shows the address and an ephemeral public key (as a QR code).
// The primary device encrypts the provisioning message to that key and
// drops it at the address; the relay passes it down the socket and forgets
// it. The relay never holds the key that opens the message. Mailboxes live
// in the database, so the socket and the drop may reach different replicas.
package provisioning

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/wire"
)

// TTL is how long a new device waits for its provisioning message. It and
// the message's size bound and the socket's close code are in package wire
// (ProvisioningTTL, MaxProvisioningBody, CloseProvisioningExpired), which
// clients share.
const TTL = wire.ProvisioningTTL

// ErrNoMailbox reports an address nobody is waiting at (unknown, expired or
// already given its message).
var ErrNoMailbox = errors.New("no device is waiting at this provisioning address")

// ErrInvalid reports a malformed address or message.
var ErrInvalid = errors.New("invalid provisioning request")

// Store keeps mailboxes by the SHA-256 of their address.
type Store interface {
	OpenMailbox(ctx context.Context, hash []byte, expires time.Time) error
	// DeliverToMailbox stores body in an open, empty, unexpired mailbox,
	// else ErrNoMailbox.
	DeliverToMailbox(ctx context.Context, hash, body []byte, now time.Time) error
	// MailboxBody returns the delivered body (nil while empty), or
	// ErrNoMailbox.
	MailboxBody(ctx context.Context, hash []byte) ([]byte, error)
	CloseMailbox(ctx context.Context, hash []byte) error
}

// Limits bound the provisioning sockets of one node: they are opened
// without authentication, so every one of them is an outsider's.
type Limits struct {
	// Total is how many sockets may be open at once (0: no limit).
	Total int
	// PerAddress is how many sockets one client address may hold open at
	// once (0: no limit).
	PerAddress int
	// Opens limits how often one client address may open a socket (nil:
	// no limit).
	Opens *ratelimit.Limiter
}

// DefaultLimits allow 1,000 waiting devices per node, 5 at once from one
// address, and 10 opens from one address then one every 30 seconds.
func DefaultLimits() Limits {
	return Limits{Total: 1000, PerAddress: 5, Opens: ratelimit.New(ratelimit.Rule{Burst: 10, Every: 30 * time.Second}, nil)}
}

// ErrBusy reports that the node holds as many provisioning sockets as it
// allows.
var ErrBusy = errors.New("too many devices are waiting to be linked; try again later")

// ErrTooManySockets reports a client address holding as many provisioning
// sockets as it may.
var ErrTooManySockets = errors.New("too many provisioning sockets open from this address")

// Notifier tells the other relay nodes that a mailbox has a message, so the
// node holding its socket sends it at once (the relay's bus).
type Notifier interface {
	NotifyProvisioning(key uuid.UUID)
}

// Service runs provisioning sockets and accepts deliveries. A waiting
// socket reads its mailbox only when told that a message was delivered (by
// Deliver on this node, or Wake from another node through the bus), and at
// a slow safety interval: idle sockets cost the database nothing.
type Service struct {
	store  Store
	log    *slog.Logger
	now    func() time.Time
	limits Limits
	notify Notifier
	// Poll is the safety interval between reads of a waiting socket's
	// mailbox when nothing told it of a delivery.
	Poll     time.Duration
	upgrader websocket.Upgrader

	mu        sync.Mutex
	open      int
	byAddress map[string]int
	waiters   map[uuid.UUID]chan struct{}
	reads     atomic.Int64
}

// New returns a Service that tells other nodes of deliveries through n
// (nil for a single node).
func New(s Store, log *slog.Logger, l Limits, n Notifier) *Service {
	return &Service{store: s, log: log, now: time.Now, limits: l, notify: n, Poll: 30 * time.Second,
		upgrader:  websocket.Upgrader{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 4096},
		byAddress: map[string]int{}, waiters: map[uuid.UUID]chan struct{}{}}
}

// Admit reserves a socket for a client address before the upgrade; the
// caller calls release when the socket is done. It returns ErrBusy,
// ErrTooManySockets or a *ratelimit.Error.
func (s *Service) Admit(address string) (release func(), err error) {
	if ok, wait := s.limits.Opens.Allow(address); !ok {
		return nil, &ratelimit.Error{RetryAfter: wait}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limits.Total > 0 && s.open >= s.limits.Total {
		return nil, ErrBusy
	}
	if s.limits.PerAddress > 0 && s.byAddress[address] >= s.limits.PerAddress {
		return nil, ErrTooManySockets
	}
	s.open++
	s.byAddress[address]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.open--
			if s.byAddress[address]--; s.byAddress[address] <= 0 {
				delete(s.byAddress, address)
			}
		})
	}, nil
}

// Sockets is how many provisioning sockets are open on this node.
func (s *Service) Sockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// MailboxReads is how many times waiting sockets have read their
// mailboxes since the node started (a measure of the load they put on
// the database).
func (s *Service) MailboxReads() int64 { return s.reads.Load() }

// Wake tells the socket waiting at the mailbox with key (uuid.Nil: every
// socket) to read its mailbox: another node delivered, or the bus may have
// lost a notice.
func (s *Service) Wake(key uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key == uuid.Nil {
		for _, c := range s.waiters {
			signal(c)
		}
		return
	}
	if c, ok := s.waiters[key]; ok {
		signal(c)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// mailboxKey is the bus's name for a mailbox: the first 16 bytes of the
// SHA-256 of its address (never the address itself).
func mailboxKey(hash []byte) uuid.UUID {
	var k uuid.UUID
	copy(k[:], hash)
	return k
}

func addressHash(address string) []byte {
	h := sha256.Sum256([]byte(address))
	return h[:]
}

// validAddress reports whether s looks like an address Accept made.
func validAddress(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 16 && base64.RawURLEncoding.EncodeToString(b) == s
}

// Deliver drops a sealed provisioning message at address.
func (s *Service) Deliver(ctx context.Context, address string, body []byte) error {
	if !validAddress(address) {
		return errors.Join(ErrInvalid, errors.New("malformed address"))
	}
	if len(body) == 0 || len(body) > wire.MaxProvisioningBody {
		return errors.Join(ErrInvalid, fmt.Errorf("the message must be 1 byte to %d KiB", wire.MaxProvisioningBody>>10))
	}
	hash := addressHash(address)
	if err := s.store.DeliverToMailbox(ctx, hash, body, s.now()); err != nil {
		return err
	}
	key := mailboxKey(hash)
	s.Wake(key)
	if s.notify != nil {
		s.notify.NotifyProvisioning(key)
	}
	return nil
}

// Accept upgrades r to the provisioning socket, opens a mailbox, sends its
// address and waits (up to TTL, or until the device hangs up) for the
// message, which it sends before closing. fail answers a failed handshake.
func (s *Service) Accept(w http.ResponseWriter, r *http.Request, fail func(status int, reason error)) {
	up := s.upgrader
	up.Error = func(w http.ResponseWriter, r *http.Request, status int, reason error) { fail(status, reason) }
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	ctx := context.WithoutCancel(r.Context())
	b := make([]byte, 16)
	rand.Read(b)
	address := base64.RawURLEncoding.EncodeToString(b)
	hash := addressHash(address)
	if err := s.store.OpenMailbox(ctx, hash, s.now().Add(TTL)); err != nil {
		s.log.WarnContext(ctx, "open provisioning mailbox", "err", err)
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "try again"), time.Now().Add(time.Second))
		return
	}
	defer s.store.CloseMailbox(ctx, hash)
	key := mailboxKey(hash)
	woken := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[key] = woken
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, key)
		s.mu.Unlock()
	}()
	if err := s.write(conn, wire.ProvisioningFrame{Type: "address", Address: address}); err != nil {
		return
	}
	// The device sends nothing; reading notices when it hangs up.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		conn.SetReadLimit(1024)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	deadline := time.NewTimer(TTL)
	defer deadline.Stop()
	tick := time.NewTicker(s.Poll)
	defer tick.Stop()
	for {
		select {
		case <-gone:
			return
		case <-deadline.C:
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseProvisioningExpired, "provisioning timed out"), time.Now().Add(time.Second))
			return
		case <-woken:
		case <-tick.C:
		}
		s.reads.Add(1)
		body, err := s.store.MailboxBody(ctx, hash)
		if err != nil {
			s.log.WarnContext(ctx, "read provisioning mailbox", "err", err)
			return
		}
		if body == nil {
			continue
		}
		if s.write(conn, wire.ProvisioningFrame{Type: "message", Body: body}) == nil {
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "delivered"), time.Now().Add(time.Second))
		}
		return
	}
}

func (s *Service) write(conn *websocket.Conn, f wire.ProvisioningFrame) error {
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	b, err := wire.Encode(f)
	if err != nil {
		return err
	}
	return conn.WriteMessage(websocket.TextMessage, b)
}
