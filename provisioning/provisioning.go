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
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Limits.
const (
	// TTL is how long a new device waits for its provisioning message.
	TTL = 10 * time.Minute
	// MaxBody bounds a provisioning message.
	MaxBody = 16 << 10
	// CloseExpired closes a socket whose wait ran out.
	CloseExpired = 4002
)

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

// Frame is what the provisioning socket sends, as JSON text messages:
// first {"type":"address"}, later {"type":"message"}.
type Frame struct {
	Type    string `json:"type"`
	Address string `json:"address,omitempty"`
	Body    []byte `json:"body,omitempty"`
}

// Service runs provisioning sockets and accepts deliveries.
type Service struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
	// Poll is how often a waiting socket checks its mailbox.
	Poll     time.Duration
	upgrader websocket.Upgrader
}

// New returns a Service.
func New(s Store, log *slog.Logger) *Service {
	return &Service{store: s, log: log, now: time.Now, Poll: 250 * time.Millisecond,
		upgrader: websocket.Upgrader{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 4096}}
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
	if len(body) == 0 || len(body) > MaxBody {
		return errors.Join(ErrInvalid, errors.New("the message must be 1 byte to 16 KiB"))
	}
	return s.store.DeliverToMailbox(ctx, addressHash(address), body, s.now())
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
	if err := s.write(conn, Frame{Type: "address", Address: address}); err != nil {
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
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseExpired, "provisioning timed out"), time.Now().Add(time.Second))
			return
		case <-tick.C:
			body, err := s.store.MailboxBody(ctx, hash)
			if err != nil {
				s.log.WarnContext(ctx, "read provisioning mailbox", "err", err)
				return
			}
			if body == nil {
				continue
			}
			if s.write(conn, Frame{Type: "message", Body: body}) == nil {
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "delivered"), time.Now().Add(time.Second))
			}
			return
		}
	}
}

func (s *Service) write(conn *websocket.Conn, f Frame) error {
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return conn.WriteJSON(f)
}
