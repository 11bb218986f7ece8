// Package relay moves opaque ciphertext envelopes between devices: it checks
// a send against the recipient's device list, stores the envelopes durably in
// per-device queues, delivers them over each device's WebSocket, deletes them
// only when the device acknowledges them, and purges them when they expire.
//
// Several relay nodes may share one database. A Bus carries wake-ups and
// disconnect orders between them; LocalBus is the single-node Bus.
package relay

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/wire"
)

// Limits of one send request.
const (
	// MaxContentBytes bounds one envelope's ciphertext (decoded). Signal
	// uses the same 96 KiB; attachments travel out of band.
	MaxContentBytes = 96 << 10
	// MaxOnlineContentBytes bounds an online-only envelope (typing
	// indicators and the like), small enough to cross relay nodes inside a
	// database notification.
	MaxOnlineContentBytes = 4 << 10
	// MaxDevicesPerAccount is the highest device id.
	MaxDevicesPerAccount = 127
	// MaxIdempotencyKeyLen bounds the Idempotency-Key a client may send.
	MaxIdempotencyKeyLen = 64
	// MaxEnvelopeType is the highest envelope type number; the relay does
	// not interpret types, it only carries them.
	MaxEnvelopeType = 255
	// IdempotencyWindow is how long a send's idempotency key is remembered.
	IdempotencyWindow = 24 * time.Hour
)

// Config holds the relay's policy; DefaultConfig documents the defaults.
type Config struct {
	// Retention is the longest an undelivered envelope is kept.
	Retention time.Duration
	// QueueMaxEnvelopes and QueueMaxBytes cap one device's queue. A send
	// skips a device whose queue is full (the answer names it) and still
	// reaches the recipient's other devices; only a send that would reach
	// no device at all is refused with *QueueFullError.
	QueueMaxEnvelopes int
	QueueMaxBytes     int64
	// QueueSenderMaxEnvelopes and QueueSenderMaxBytes are one sending
	// account's share of each device's queue: beyond it that sender's
	// envelopes skip the device, so no single sender can fill a queue for
	// everyone else (it takes QueueMaxEnvelopes/QueueSenderMaxEnvelopes
	// accounts). An account sending to its own devices is not held to it.
	// 0: no share limit.
	QueueSenderMaxEnvelopes int
	QueueSenderMaxBytes     int64
	// StoreBytesBurst and StoreBytesPerHour budget, per sending account,
	// the ciphertext bytes its sends store: each stored envelope is
	// charged its size, so a multi-recipient send costs its ciphertext
	// once per recipient device. StoreEnvelopesBurst and
	// StoreEnvelopesPerHour budget the envelopes (recipient devices) the
	// same way. A send over budget is refused with *ratelimit.Error; one
	// larger than a burst is invalid. 0 burst: no budget.
	StoreBytesBurst       int64
	StoreBytesPerHour     int64
	StoreEnvelopesBurst   int
	StoreEnvelopesPerHour int
	// SendRate is each sending device's sustained rate (envelope requests
	// per second) and SendBurst its burst.
	SendRate  float64
	SendBurst int
	// Window is how many delivered envelopes a connection may have
	// unacknowledged before delivery pauses.
	Window int
	// PingInterval is how often a connection is pinged; a connection that
	// has not answered for two intervals is closed.
	PingInterval time.Duration
	// WriteTimeout bounds every write to a connection; a reader too slow
	// to take a frame within it is disconnected.
	WriteTimeout time.Duration
	// DeviceCheckInterval is how often a connection checks, at a ping, that
	// its device still exists, so a device removed by another process
	// (parleyd admin) loses its socket too (0: never).
	DeviceCheckInterval time.Duration
	// FrameRate is how many frames per second (data frames and pings) a
	// connection may send, sustained, and FrameBurst how many at once; a
	// connection over it is closed with wire.CloseFrameRate.
	FrameRate  float64
	FrameBurst int
	// ReconnectBurst is how many connections one device may open on this
	// node at once, and ReconnectInterval how often it may open one more
	// after that; AdmitConnection refuses the rest.
	ReconnectBurst    int
	ReconnectInterval time.Duration
	// Stored, if set, is told about envelopes just stored that were not
	// handed to a connection on this node (once per device per commit),
	// with whether any was urgent: the push dispatcher wakes the device
	// if they stay undelivered.
	Stored func(account uuid.UUID, device int, urgent bool)
	// Committers is how many batches of sends may be stored at once
	// (group commit): 1 where the database has one writer (SQLite), more
	// where a batch can gather while another commits (PostgreSQL).
	Committers int
	// RequestBytes bounds the request frames being served at once on this
	// node, in bytes (each connection's are bounded by
	// wire.MaxRequestBytesInFlight too); a connection whose frame does not
	// fit reads no further frames until it does, holding that frame
	// besides. Values below wire.MaxClientFrame are raised to it.
	RequestBytes int64
	// Metrics, if set, registers the relay's Prometheus figures
	// (parley_relay_*).
	Metrics prometheus.Registerer
}

// DefaultConfig returns the relay's default policy.
func DefaultConfig() Config {
	return Config{
		Retention:         30 * 24 * time.Hour,
		QueueMaxEnvelopes: 10_000,
		QueueMaxBytes:     100 << 20,
		// A tenth of each cap: ten accounts are needed to fill a queue.
		QueueSenderMaxEnvelopes: 1_000,
		QueueSenderMaxBytes:     10 << 20,
		// 128 MiB at once and 64 MiB an hour (1.5 GiB a day) of stored
		// ciphertext per account, counted per recipient device; 10,000
		// envelopes at once (a 1000-member group of two devices each is
		// 2,000) and 36,000 an hour (10 a second).
		StoreBytesBurst:       128 << 20,
		StoreBytesPerHour:     64 << 20,
		StoreEnvelopesBurst:   10_000,
		StoreEnvelopesPerHour: 36_000,
		SendRate:              100,
		SendBurst:             500,
		Window:                128,
		PingInterval:          30 * time.Second,
		WriteTimeout:          10 * time.Second,

		DeviceCheckInterval: 2 * time.Minute,
		// Clients that ack every envelope on its own (parley does, as
		// Signal's clients answer every request) send a frame per envelope
		// while they drain a queue: a few hundred a second on a fast
		// device. The limit stops floods, not draining.
		FrameRate:  1000,
		FrameBurst: 2000,
		// Sixty connections at once, then one a second: enough for a phone
		// changing networks or a script running `parley receive` in a
		// loop, not for a loop reconnecting as fast as it can.
		ReconnectBurst:    60,
		ReconnectInterval: time.Second,
		Committers:        1,
		// Sixteen connections' worth of wire.MaxRequestBytesInFlight.
		RequestBytes: 64 << 20,
	}
}

// Envelope is an envelope as stored and delivered.
type Envelope struct {
	// Seq orders a device's queue; it is internal to the relay. Prev is,
	// for an envelope just stored, the Seq of the envelope queued for the
	// same device before it (0: none), so that a connection that has
	// delivered up to Prev can take it without reading the queue.
	Seq, Prev       int64
	ID              uuid.UUID
	Type            int
	SourceAccount   uuid.UUID
	SourceDevice    int
	DestDevice      int
	ClientTimestamp int64 // Unix ms, as the sender said
	ServerTimestamp time.Time
	ExpiresAt       time.Time
	Urgent          bool
	Online          bool
	Content         []byte
}

// Outgoing is one envelope of a send request, for one recipient device.
type Outgoing struct {
	Device         int
	RegistrationID int
	Type           int
	Content        []byte
}

// Send is a send request: envelopes for every device of one account.
type Send struct {
	// Sender is the sending device; zero for a sealed-sender send.
	Sender accounts.Principal
	// Sealed marks a sealed-sender send, admitted by the destination's
	// unidentified-access key (checked by the caller): its envelopes are
	// stored without a source and must be of type TypeUnidentifiedSender.
	// Its rate limits and budgets apply per ClientAddress and per
	// destination, the only things the relay knows of its sender.
	Sealed        bool
	ClientAddress string
	Destination   uuid.UUID
	Timestamp     int64 // client's timestamp, Unix ms
	// IdempotencyKey, if not empty, makes a retried request store nothing
	// new and answer as the first one did.
	IdempotencyKey string
	ExpiresIn      time.Duration // 0: no expiry of its own (the retention applies)
	Online         bool
	Urgent         bool
	Envelopes      []Outgoing
}

// Receipt is the answer to an accepted send.
type Receipt struct {
	ServerTimestamp time.Time
	// Replayed reports that the idempotency key had been used and nothing
	// new was stored.
	Replayed bool
	// Skipped lists the addressed devices the send did not reach because
	// their queue had no room (in the order addressed); a replay repeats
	// the first answer's list.
	Skipped []Skipped
}

// Skipped is a device a send did not reach, and why.
type Skipped struct {
	Account uuid.UUID
	Device  int
	Reason  SkipReason
}

// SkipReason says why a device was skipped.
type SkipReason string

// The reasons a device is skipped.
const (
	// SkipQueueFull: the device's queue is at its cap (it has been
	// offline a long time); it gets messages again once it drains.
	SkipQueueFull SkipReason = "queue_full"
	// SkipSenderShare: this sender's share of the device's queue is used
	// up; other senders still reach it.
	SkipSenderShare SkipReason = "sender_share_full"
)

// TypeUnidentifiedSender is the envelope type of a sealed-sender message
// (Signal's Envelope.Type UNIDENTIFIED_SENDER): the sender is inside.
const TypeUnidentifiedSender = 6

// Errors returned by Send.
var (
	ErrInvalid            = errors.New("invalid send request")
	ErrNoAccount          = errors.New("no such account")
	ErrIdempotencyKeyUsed = errors.New("idempotency key was already used for a different request")
	ErrShuttingDown       = errors.New("relay is shutting down")
)

// MismatchedDevicesError reports that a send did not address exactly the
// recipient's devices.
type MismatchedDevicesError struct {
	Missing, Extra []int
}

func (e *MismatchedDevicesError) Error() string {
	return fmt.Sprintf("device list does not match the account: missing %v, extra %v", e.Missing, e.Extra)
}

// StaleDevicesError reports devices whose registration id differs from the
// one the sender used (the app was reinstalled).
type StaleDevicesError struct {
	Stale []int
}

func (e *StaleDevicesError) Error() string {
	return fmt.Sprintf("stale registration ids for devices %v", e.Stale)
}

// QueueFullError reports that a send reached no device: every addressed
// device's queue (or the sender's share of it) is full. Devices lists those
// of Account (the first recipient, for a multi-recipient send).
type QueueFullError struct {
	Account uuid.UUID
	Devices []int
}

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("queue full for devices %v", e.Devices)
}

// Batch is an accepted send as handed to the Store.
type Batch struct {
	Sender      accounts.Principal
	Destination uuid.UUID
	// Key identifies the request for idempotency (nil: no key); RequestHash
	// tells a genuine retry from a different request reusing the key.
	Key         []byte
	RequestHash []byte
	KeyExpires  time.Time
	Envelopes   []Envelope
	Now         time.Time
	// QueueMaxEnvelopes and QueueMaxBytes cap each destination device's
	// queue, QueueSenderMaxEnvelopes and QueueSenderMaxBytes the Sender
	// account's share of it (0: no cap).
	QueueMaxEnvelopes       int
	QueueMaxBytes           int64
	QueueSenderMaxEnvelopes int
	QueueSenderMaxBytes     int64
}

// Multi is b as a multi-recipient batch of one part.
func (b Batch) Multi() MultiBatch {
	return MultiBatch{
		Sender: b.Sender, Key: b.Key, RequestHash: b.RequestHash, KeyExpires: b.KeyExpires, Now: b.Now,
		Parts:             []Part{{Destination: b.Destination, Envelopes: b.Envelopes}},
		QueueMaxEnvelopes: b.QueueMaxEnvelopes, QueueMaxBytes: b.QueueMaxBytes,
		QueueSenderMaxEnvelopes: b.QueueSenderMaxEnvelopes, QueueSenderMaxBytes: b.QueueSenderMaxBytes,
	}
}

// Store is the durable queue storage.
type Store interface {
	// EnqueueBatch stores each request as one send, answering each on its
	// own: results[i] is reqs[i]'s. It uses as few transactions as it
	// can (one for the whole batch when nothing fails), and a request
	// that fails (its check, full queues, a reused key, even a database
	// error) fails alone. For each request, after Check accepts its
	// destinations' devices (read and locked; only ID and RegistrationID
	// are filled in), its envelopes are stored, except those for a device
	// whose queue would exceed the batch's caps or the sender's share of
	// them: those devices are listed in Receipt.Skipped (SkipQueueFull
	// taking precedence; the share applies only to other accounts'
	// devices). If every envelope is skipped nothing is stored and the
	// error is *QueueFullError. A Key seen before (with the same
	// RequestHash) stores nothing and returns the first Receipt (with its
	// Skipped list), Replayed. Errors are ErrNoAccount,
	// ErrIdempotencyKeyUsed, *QueueFullError, Check's, or the database's.
	// Result.Stored lists the envelopes stored, with Seq and Prev set.
	// Measuring the caps costs the same at any queue depth.
	//
	// In the same transaction it deletes acks, the acknowledged envelopes
	// that arrived with the batch (unknown ones are ignored); the error is
	// theirs: nil when they are deleted, whatever became of the requests.
	EnqueueBatch(ctx context.Context, reqs []Request, acks []Ack) ([]Result, error)
	// Devices lists an account's devices (none for an unknown account);
	// the same method serves accounts.Store.
	Devices(ctx context.Context, account uuid.UUID) ([]accounts.Device, error)
	// Pending returns up to limit envelopes of a device with Seq > after,
	// oldest first, skipping those expired at now.
	Pending(ctx context.Context, account uuid.UUID, device int, after int64, now time.Time, limit int) ([]Envelope, error)
	// PurgeExpired deletes up to limit envelopes expired at now, and
	// forgets idempotency keys past their window; it returns how many
	// envelopes it deleted.
	PurgeExpired(ctx context.Context, now time.Time, limit int) (int, error)
}

// Request is one accepted send waiting to be stored: the batch and the
// check its destinations' current devices must pass.
type Request struct {
	Batch MultiBatch
	Check func(map[uuid.UUID][]accounts.Device) error
}

// Result is what became of a Request.
type Result struct {
	Receipt Receipt
	Err     error
	// Stored are the envelopes stored, with Seq and Prev.
	Stored []Stored
}

// Stored is an envelope just stored and the account it is for.
type Stored struct {
	Account  uuid.UUID
	Envelope Envelope
}

// Ack is an acknowledged envelope of a device.
type Ack struct {
	Account uuid.UUID
	Device  int
	Seq     int64
}

// Service is the relay.
type Service struct {
	cfg   Config
	store Store
	bus   Bus
	log   *slog.Logger
	now   func() time.Time
	limit *ratelimit.Limiter
	// storedBytes and storedEnvelopes are the per-account budgets of what
	// sends store.
	storedBytes, storedEnvelopes *ratelimit.Budget
	// reconnects limits how often each device opens a connection here.
	reconnects *ratelimit.Limiter
	hub        *hub
	commits    *committer
	// requestBytes is Config.RequestBytes: request frames being served.
	requestBytes *semaphore.Weighted
	// provisioning is told of other nodes' provisioning deliveries.
	provisioning func(key uuid.UUID)

	// reads is the parent of the connections' queue reads and device
	// checks, ended by Shutdown (not each connection's context: a child
	// of that leaves a map in it, about 400 bytes per idle connection).
	reads     context.Context
	stopReads context.CancelFunc

	mu       sync.Mutex
	shutdown bool
	conns    sync.WaitGroup
	// pollOnce starts poll, the poller idle sockets wait in, at the first
	// connection (nil where none can be had).
	pollOnce sync.Once
	poll     atomic.Pointer[poller]
}

// pollerLen is how many sockets wait in the poller.
func (s *Service) pollerLen() int {
	if p := s.poll.Load(); p != nil {
		return p.len()
	}
	return 0
}

// poller returns the node's poller, starting it at the first call; nil
// where the system has none.
func (s *Service) poller() *poller {
	s.pollOnce.Do(func() {
		p, err := newPoller(s.log)
		if err != nil {
			s.log.Info("idle connections each keep a goroutine", "reason", err)
			return
		}
		s.poll.Store(p)
	})
	return s.poll.Load()
}

// New returns a relay Service. bus carries events between nodes (LocalBus
// for a single node); Run must be running for other nodes' events to
// arrive.
func New(cfg Config, store Store, bus Bus, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{
		cfg: cfg, store: store, bus: bus, log: log, now: now,
		limit:           ratelimit.New(ratelimit.Rule{Burst: cfg.SendBurst, Every: time.Duration(float64(time.Second) / max(cfg.SendRate, 1e-9))}, now),
		storedBytes:     ratelimit.NewBudget(perHour(cfg.StoreBytesBurst, cfg.StoreBytesPerHour), now),
		storedEnvelopes: ratelimit.NewBudget(perHour(int64(cfg.StoreEnvelopesBurst), int64(cfg.StoreEnvelopesPerHour)), now),
		reconnects:      ratelimit.New(ratelimit.Rule{Burst: cfg.ReconnectBurst, Every: cfg.ReconnectInterval}, now),
		hub:             newHub(),
	}
	s.reads, s.stopReads = context.WithCancel(context.Background())
	s.commits = newCommitter(store, cfg.Committers, log, s.handOff, newMetrics(cfg.Metrics, s))
	// A frame larger than the budget would wait for ever.
	s.requestBytes = semaphore.NewWeighted(max(cfg.RequestBytes, wire.MaxClientFrame))
	return s
}

// perHour is a budget of burst units refilled at perHour units an hour (a
// zero Rule, no budget, when either is not positive).
func perHour(burst, perHour int64) ratelimit.Rule {
	if burst <= 0 || perHour <= 0 {
		return ratelimit.Rule{}
	}
	return ratelimit.Rule{Burst: int(burst), Every: max(time.Hour/time.Duration(perHour), 1)}
}

// Run delivers other nodes' events to local connections until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	return s.bus.Run(ctx, s.handleEvents, s.resync)
}

// Send validates and stores a send (or, for online-only sends, hands it to
// the recipients' live connections) and wakes the recipient devices.
func (s *Service) Send(ctx context.Context, req Send) (Receipt, error) {
	if err := validate(req); err != nil {
		return Receipt{}, err
	}
	if err := s.admit(req); err != nil {
		return Receipt{}, err
	}
	now := s.now()
	check := func(devs []accounts.Device) error { return checkDevices(req, devs) }
	if req.Online {
		return s.sendOnline(ctx, req, now, check)
	}
	expires := s.expiry(now, req.ExpiresIn)
	b := Batch{
		Sender: req.Sender, Destination: req.Destination, Now: now,
		QueueMaxEnvelopes: s.cfg.QueueMaxEnvelopes, QueueMaxBytes: s.cfg.QueueMaxBytes,
		QueueSenderMaxEnvelopes: s.cfg.QueueSenderMaxEnvelopes, QueueSenderMaxBytes: s.cfg.QueueSenderMaxBytes,
	}
	if req.IdempotencyKey != "" {
		k := sha256.Sum256([]byte(req.IdempotencyKey))
		h := requestHash(req)
		b.Key, b.RequestHash, b.KeyExpires = k[:], h[:], now.Add(IdempotencyWindow)
	}
	var size int64
	sizes := make(map[int]int64, len(req.Envelopes)) // by device, to refund skipped ones
	for _, o := range req.Envelopes {
		e := envelope(req, o, now)
		e.ExpiresAt = expires
		b.Envelopes = append(b.Envelopes, e)
		size += int64(len(o.Content))
		sizes[o.Device] = int64(len(o.Content))
	}
	c, err := s.charge(budgetKey(req), int64(len(b.Envelopes)), size)
	if err != nil {
		if b.Key == nil {
			return Receipt{}, err
		}
		// Over budget, but a retry of a send already stored still gets
		// its first answer: the store looks the key up before anything
		// else, and the check refuses to store anything new.
		res := s.commits.enqueue(ctx, Request{Batch: b.Multi(), Check: func(map[uuid.UUID][]accounts.Device) error { return err }})
		if res.Err == nil && res.Receipt.Replayed {
			return res.Receipt, nil
		}
		return Receipt{}, err
	}
	res := s.commits.enqueue(ctx, Request{Batch: b.Multi(), Check: func(devs map[uuid.UUID][]accounts.Device) error {
		return check(devs[req.Destination])
	}})
	rc, err := res.Receipt, res.Err
	if err != nil {
		c.refund(int64(len(b.Envelopes)), size)
		return Receipt{}, err
	}
	if rc.Replayed {
		c.refund(int64(len(b.Envelopes)), size)
		return rc, nil
	}
	for _, sk := range rc.Skipped {
		c.refund(1, sizes[sk.Device])
	}
	return rc, nil
}

// budgetKey names whose storage budgets a send spends: its account's, or
// for a sealed send its client address's.
func budgetKey(req Send) string {
	if req.Sealed {
		return "sealed-from:" + req.ClientAddress
	}
	return req.Sender.Account.String()
}

// charge is what a send was charged against its account's budgets.
type charge struct {
	s   *Service
	key string
}

// charge takes envelopes and bytes from the sending account's budgets of
// stored envelopes and bytes, or refuses the send: *ratelimit.Error when
// the budget will have room later, ErrInvalid when one request asks for
// more than a whole budget.
func (s *Service) charge(key string, envelopes, bytes int64) (charge, error) {
	if burst := s.storedEnvelopes.Burst(); burst > 0 && envelopes > burst {
		return charge{}, fmt.Errorf("%w: a request may store at most %d envelopes (one per recipient device); this one stores %d", ErrInvalid, burst, envelopes)
	}
	if burst := s.storedBytes.Burst(); burst > 0 && bytes > burst {
		return charge{}, fmt.Errorf("%w: a request may store at most %d bytes (ciphertext size times recipient devices); this one stores %d", ErrInvalid, burst, bytes)
	}
	if ok, wait := s.storedEnvelopes.Take(key, envelopes); !ok {
		return charge{}, &ratelimit.Error{RetryAfter: wait}
	}
	if ok, wait := s.storedBytes.Take(key, bytes); !ok {
		s.storedEnvelopes.Refund(key, envelopes)
		return charge{}, &ratelimit.Error{RetryAfter: wait}
	}
	return charge{s: s, key: key}, nil
}

// refund gives back the charge for envelopes that were not stored.
func (c charge) refund(envelopes, bytes int64) {
	c.s.storedEnvelopes.Refund(c.key, envelopes)
	c.s.storedBytes.Refund(c.key, bytes)
}

// admit applies the sender's rate limit and refuses sends while shutting
// down.
func (s *Service) admit(req Send, destinations ...uuid.UUID) error {
	keys := []string{req.Sender.Account.String() + "." + strconv.Itoa(req.Sender.Device)}
	if req.Sealed {
		// Only what the relay sees of a sealed sender counts: its client
		// address, and each destination (so one address cannot flood an
		// account, nor one account's senders starve another's).
		if len(destinations) == 0 {
			destinations = []uuid.UUID{req.Destination}
		}
		keys = []string{"sealed-from:" + req.ClientAddress}
		for _, d := range destinations {
			keys = append(keys, "sealed-to:"+d.String())
		}
	}
	for _, k := range keys {
		if ok, wait := s.limit.Allow(k); !ok {
			return &ratelimit.Error{RetryAfter: wait}
		}
	}
	if s.closing() {
		return ErrShuttingDown
	}
	return nil
}

// expiry is when envelopes sent at now expire: after the sender's
// expiresIn, or the relay's retention if that is sooner.
func (s *Service) expiry(now time.Time, expiresIn time.Duration) time.Time {
	expires := now.Add(s.cfg.Retention)
	if expiresIn > 0 && now.Add(expiresIn).Before(expires) {
		expires = now.Add(expiresIn)
	}
	return expires
}

// sendOnline delivers an online-only send to devices connected now, on any
// node; nothing is stored. The device list is checked like any send's.
func (s *Service) sendOnline(ctx context.Context, req Send, now time.Time, check func([]accounts.Device) error) (Receipt, error) {
	devs, err := s.store.Devices(ctx, req.Destination)
	if err != nil {
		return Receipt{}, err
	}
	if err := check(devs); err != nil {
		return Receipt{}, err
	}
	for _, o := range req.Envelopes {
		e := envelope(req, o, now)
		e.Online = true
		if !s.hub.deliverOnline(req.Destination, e) {
			s.bus.Publish(Event{Kind: EventOnline, Account: req.Destination, Device: o.Device, Envelope: &e})
		}
	}
	return Receipt{ServerTimestamp: now}, nil
}

// envelope stamps one envelope of req with a fresh server id and time.
func envelope(req Send, o Outgoing, now time.Time) Envelope {
	return Envelope{
		ID: uuid.New(), Type: o.Type, SourceAccount: req.Sender.Account, SourceDevice: req.Sender.Device,
		DestDevice: o.Device, ClientTimestamp: req.Timestamp, ServerTimestamp: now, Urgent: req.Urgent, Content: o.Content,
	}
}

// Disconnect closes the live connections of a device (device 0: of every
// device of the account), on every node. It is called when devices are
// removed or their credentials replaced.
func (s *Service) Disconnect(account uuid.UUID, device int) {
	ev := Event{Kind: EventDisconnect, Account: account, Device: device, At: s.now().UnixMilli()}
	s.hub.disconnect(ev)
	s.bus.Publish(ev)
}

// PurgeExpired deletes expired envelopes, in batches, until none is left.
func (s *Service) PurgeExpired(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.store.PurgeExpired(ctx, s.now(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}

// Shutdown refuses new sends and connections, closes every connection with
// "going away" and waits (until ctx ends) for them to finish and for the
// last acknowledgements to be deleted. Nothing stored is lost: envelopes not
// acknowledged are delivered again when the device reconnects.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	s.hub.closeAll()
	s.stopReads() // the closing connections need no more of their queues
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		s.pollOnce.Do(func() {}) // no poller starts after this
		if p := s.poll.Load(); p != nil {
			p.close()
		}
		s.commits.close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relay shutdown: %w", ctx.Err())
	}
}

// Connections returns the number of live connections on this node.
func (s *Service) Connections() int { return s.hub.len() }

func (s *Service) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// handOff gives envelopes just stored (in Seq order) to their devices:
// straight to a connection here that has delivered everything queued
// before them (else it reads its queue), or as a wake-up to the other
// nodes.
func (s *Service) handOff(stored []Stored) {
	type device struct {
		account uuid.UUID
		id      int
	}
	var away map[device]bool // devices not connected here → any urgent
	for _, st := range stored {
		c := s.hub.get(st.Account, st.Envelope.DestDevice)
		if c != nil && c.handOff(st.Envelope) {
			continue
		}
		s.bus.Publish(Event{Kind: EventWake, Account: st.Account, Device: st.Envelope.DestDevice})
		if s.cfg.Stored != nil { // not handed off: no socket here, or one closing or behind (the dispatcher checks again)
			if away == nil {
				away = map[device]bool{}
			}
			d := device{st.Account, st.Envelope.DestDevice}
			away[d] = away[d] || st.Envelope.Urgent
		}
	}
	for d, urgent := range away {
		s.cfg.Stored(d.account, d.id, urgent)
	}
}

// Connected reports whether the device has a live connection to this
// node.
func (s *Service) Connected(account uuid.UUID, device int) bool {
	return s.hub.get(account, device) != nil
}

// OnProvisioning sets what to call when another node reports a message in
// a provisioning mailbox (with the mailbox's key), and with uuid.Nil after
// the bus may have lost events. Set it before Run.
func (s *Service) OnProvisioning(fn func(key uuid.UUID)) { s.provisioning = fn }

// NotifyProvisioning tells the other nodes that the provisioning mailbox
// with key has a message.
func (s *Service) NotifyProvisioning(key uuid.UUID) {
	s.bus.Publish(Event{Kind: EventProvision, Account: key})
}

func (s *Service) handleEvents(evs []Event) {
	for _, ev := range evs {
		switch ev.Kind {
		case EventProvision:
			if s.provisioning != nil {
				s.provisioning(ev.Account)
			}
		case EventWake:
			s.hub.wake(ev.Account, ev.Device)
		case EventDisconnect, EventConnected:
			s.hub.disconnect(ev)
		case EventOnline:
			if ev.Envelope != nil {
				s.hub.deliverOnline(ev.Account, *ev.Envelope)
			}
		case EventResync:
			s.resync()
		}
	}
}

// resync wakes every local connection, and every provisioning socket,
// after the bus may have lost events.
func (s *Service) resync() {
	s.hub.wakeAll()
	if s.provisioning != nil {
		s.provisioning(uuid.Nil)
	}
}

func validate(req Send) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if len(req.Envelopes) == 0 {
		return bad("at least one envelope is required")
	}
	if len(req.Envelopes) > MaxDevicesPerAccount {
		return bad("at most %d envelopes per request", MaxDevicesPerAccount)
	}
	if req.Timestamp <= 0 {
		return bad("timestamp must be a positive Unix time in milliseconds")
	}
	if req.ExpiresIn < 0 {
		return bad("expiry must not be negative")
	}
	if len(req.IdempotencyKey) > MaxIdempotencyKeyLen || strings.ContainsFunc(req.IdempotencyKey, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return bad("idempotency key must be 1 to %d printable ASCII characters", MaxIdempotencyKeyLen)
	}
	if req.Online && req.IdempotencyKey != "" {
		return bad("online-only sends are not stored and take no idempotency key")
	}
	limit := MaxContentBytes
	if req.Online {
		limit = MaxOnlineContentBytes
	}
	seen := map[int]bool{}
	for i, e := range req.Envelopes {
		switch {
		case e.Device < 1 || e.Device > MaxDevicesPerAccount:
			return bad("envelope %d: device must be 1 to %d", i, MaxDevicesPerAccount)
		case seen[e.Device]:
			return bad("envelope %d: device %d appears twice", i, e.Device)
		case e.RegistrationID < 1 || e.RegistrationID > 16380:
			return bad("envelope %d: registration id must be 1 to 16380", i)
		case e.Type < 1 || e.Type > MaxEnvelopeType:
			return bad("envelope %d: type must be 1 to %d", i, MaxEnvelopeType)
		case req.Sealed != (e.Type == TypeUnidentifiedSender):
			return bad("envelope %d: type %d is for sealed-sender sends only, and they use only it", i, TypeUnidentifiedSender)
		case len(e.Content) == 0:
			return bad("envelope %d: content is empty", i)
		case len(e.Content) > limit:
			return bad("envelope %d: content exceeds %d bytes", i, limit)
		}
		seen[e.Device] = true
	}
	if req.Destination == req.Sender.Account && seen[req.Sender.Device] {
		return bad("a device does not send to itself")
	}
	return nil
}

// checkDevices compares a send with the destination's devices. Sending to
// one's own account addresses every device but the sender.
func checkDevices(req Send, devs []accounts.Device) error {
	if len(devs) == 0 {
		return ErrNoAccount
	}
	want := map[int]int{}
	for _, d := range devs {
		if req.Destination == req.Sender.Account && d.ID == req.Sender.Device {
			continue
		}
		want[d.ID] = d.RegistrationID
	}
	var missing, extra, stale []int
	got := map[int]bool{}
	for _, e := range req.Envelopes {
		got[e.Device] = true
		reg, ok := want[e.Device]
		switch {
		case !ok:
			extra = append(extra, e.Device)
		case reg != e.RegistrationID:
			stale = append(stale, e.Device)
		}
	}
	for id := range want {
		if !got[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		slices.Sort(missing)
		slices.Sort(extra)
		return &MismatchedDevicesError{Missing: missing, Extra: extra}
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		return &StaleDevicesError{Stale: stale}
	}
	return nil
}

// requestHash identifies a send's content, so that a reused idempotency key
// on a different request is told apart from a retry.
func requestHash(req Send) [32]byte {
	h := sha256.New()
	var buf [8]byte
	num := func(v int64) {
		binary.BigEndian.PutUint64(buf[:], uint64(v))
		h.Write(buf[:])
	}
	h.Write(req.Destination[:])
	num(req.Timestamp)
	num(int64(req.ExpiresIn))
	if req.Urgent {
		num(1)
	} else {
		num(0)
	}
	for _, e := range req.Envelopes {
		num(int64(e.Device))
		num(int64(e.RegistrationID))
		num(int64(e.Type))
		num(int64(len(e.Content)))
		h.Write(e.Content)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
