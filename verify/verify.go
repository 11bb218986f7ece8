// Package verify proves that a client controls a phone number: it runs
// verification sessions (a code sent by SMS, bounded checks, expiry) under
// per-number, per-IP and per-prefix send limits that blunt SMS pumping.
//
// The relay never stores the number (only its keyed hash), the session id
// (only its SHA-256) or the code (only an HMAC under a server key).
package verify

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/ratelimit"
)

// Errors returned by Service; the HTTP layer maps each to a status.
var (
	ErrNotFound           = errors.New("verification session not found or expired")
	ErrCallingCodeBlocked = errors.New("verification is not offered for this country calling code")
	ErrBadCode            = errors.New("verification code must be 6 digits")
	ErrWrongCode          = errors.New("verification code is wrong")
	ErrCodeExpired        = errors.New("verification code expired; request a new one")
	ErrNoAttemptsLeft     = errors.New("too many wrong codes; start a new session")
	ErrTooManySends       = errors.New("too many codes sent in this session; start a new session later")
	ErrNotVerified        = errors.New("verification session is not verified")
	ErrAlreadyVerified    = errors.New("verification session is already verified")
	// ErrProvider wraps failures of the SMS provider (the caller may retry).
	ErrProvider = errors.New("SMS provider failed")
	// ErrUndeliverable reports that the provider refused the number itself.
	ErrUndeliverable = errors.New("SMS provider cannot deliver to this number")
)

// CodeLen is the number of digits in a verification code.
const CodeLen = 6

// CodeSender delivers a code the relay generated (Twilio Programmable SMS, or
// the log in development).
type CodeSender interface {
	SendCode(ctx context.Context, n phone.Number, code string) error
}

// Provider is an external service that generates, sends and checks codes
// itself (Twilio Verify). ref identifies the provider's verification and is
// the only thing the relay stores about it.
type Provider interface {
	StartVerification(ctx context.Context, n phone.Number) (ref string, err error)
	// CheckVerification reports whether code is right. It returns
	// ErrCodeExpired or ErrNoAttemptsLeft when the provider says so.
	CheckVerification(ctx context.Context, ref, code string) (bool, error)
}

// Session is the stored state of one verification.
type Session struct {
	IDHash      [32]byte
	Number      phone.Hash
	CodeHash    []byte // HMAC of the current code; nil when a Provider owns it
	ProviderRef string // the Provider's verification id, if any
	CodeExpires time.Time
	Sends       int
	NextSend    time.Time
	Attempts    int
	Verified    time.Time // zero until verified
	Expires     time.Time
}

// Store persists sessions.
type Store interface {
	// CreateSession stores a new session.
	CreateSession(ctx context.Context, s Session) error
	// Session returns the unexpired session with this id hash, or ErrNotFound.
	Session(ctx context.Context, idHash [32]byte, now time.Time) (Session, error)
	// ReserveSend atomically counts one more send, sets when the next may
	// be made and forgets the previous code, if the session is unverified,
	// unexpired at now, still has exactly sends sends and its next send is
	// due at now; otherwise it returns ErrNotFound and changes nothing.
	// Parallel requests that all read the same state therefore get one send
	// between them.
	ReserveSend(ctx context.Context, idHash [32]byte, sends int, now, nextSend time.Time) error
	// SetCode stores the code of the session's send number sends, if that
	// is still its latest and the session is unverified (ErrNotFound
	// otherwise).
	SetCode(ctx context.Context, idHash [32]byte, sends int, codeHash []byte, providerRef string, codeExpires time.Time) error
	// ReserveAttempt atomically counts one check if fewer than max were made
	// (ErrNoAttemptsLeft otherwise, so parallel guesses cannot exceed max)
	// and returns the session as of that count: the code to check is the one
	// stored then, never an older one read earlier.
	ReserveAttempt(ctx context.Context, idHash [32]byte, max int, now time.Time) (Session, error)
	// MarkVerified records success and forgets the code (codes are single
	// use), if the session still has exactly sends sends (no code was sent
	// after the one checked) and is not verified yet; otherwise it returns
	// ErrNotFound and changes nothing.
	MarkVerified(ctx context.Context, idHash [32]byte, sends int, at time.Time) error
	// DeleteExpiredSessions removes sessions that expired before now, and
	// send-budget counts of hours before now's previous hour.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error)
	// TakeSendBudget counts one code sent in hour (hours since the Unix
	// epoch) against every budget, atomically and all or none, across every
	// replica sharing the store (no read-then-write). If a budget's count for
	// that hour has reached its Limit it counts nothing and returns that
	// budget's Scope; otherwise it returns "".
	TakeSendBudget(ctx context.Context, hour int64, budgets []Budget) (exhausted string, err error)
}

// Budget is a number of codes that may be sent per clock hour under one
// scope ("global", or "country:" followed by a calling code).
type Budget struct {
	Scope string
	Limit int
}

// BudgetError reports that an hourly send budget is spent; no code was
// sent. The HTTP layer answers 429 sms_budget_exhausted with Retry-After.
type BudgetError struct {
	Scope      string // "global" or "country"
	RetryAfter time.Duration
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("the %s hourly SMS budget is spent; retry in %v", e.Scope, e.RetryAfter.Round(time.Second))
}

// Config tunes a Service. Zero fields take the defaults in DefaultConfig.
type Config struct {
	CodeTTL     time.Duration // how long a code is valid (10 min)
	SessionTTL  time.Duration // how long a session lives, verified or not (1 h)
	MaxAttempts int           // checks per session (5)
	// ResendDelays[i] is the wait after send i+1 before another code may be
	// sent in the same session; its length+1 is the sends per session.
	ResendDelays []time.Duration
	// TestNumbers maps canonical numbers to fixed codes: no SMS is sent and
	// send limits do not apply (app-review accounts, automated tests).
	TestNumbers map[string]string
	// AllowCallingCodes, if non-empty, lists the only calling codes served;
	// DenyCallingCodes lists codes refused. Both hold digits without '+'.
	AllowCallingCodes map[string]bool
	DenyCallingCodes  map[string]bool
	// Limits on sends (each zero Rule disables that limit).
	PerIP, PerNumber, PerPrefix ratelimit.Rule
	// PrefixDigits is how many national digits after the calling code form
	// the prefix that PerPrefix limits (4).
	PrefixDigits int
	// HourlyBudget caps the codes sent per clock hour by every replica
	// together, and CountryHourlyBudget those sent to one country calling
	// code; 0 disables each. They bound what SMS pumping from many
	// addresses and prefixes can cost (the per-IP, per-number and
	// per-prefix limits do not). Test numbers do not count.
	HourlyBudget, CountryHourlyBudget int
}

// DefaultConfig returns the limits used when Config fields are zero.
func DefaultConfig() Config {
	return Config{
		CodeTTL:      10 * time.Minute,
		SessionTTL:   time.Hour,
		MaxAttempts:  5,
		ResendDelays: []time.Duration{30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute},
		PerIP:        ratelimit.Rule{Burst: 10, Every: 6 * time.Minute},
		PerNumber:    ratelimit.Rule{Burst: 5, Every: 12 * time.Minute},
		PerPrefix:    ratelimit.Rule{Burst: 30, Every: time.Minute},
		PrefixDigits: 4,
		// A deployment sending more than this is either very large (raise
		// it) or being pumped.
		HourlyBudget:        1000,
		CountryHourlyBudget: 300,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.CodeTTL == 0 {
		c.CodeTTL = d.CodeTTL
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.ResendDelays == nil {
		c.ResendDelays = d.ResendDelays
	}
	if c.PrefixDigits == 0 {
		c.PrefixDigits = d.PrefixDigits
	}
}

// Service runs verification sessions.
type Service struct {
	cfg      Config
	store    Store
	sender   CodeSender
	provider Provider
	hasher   *phone.Hasher
	codeKey  []byte
	log      *slog.Logger
	now      func() time.Time

	perIP, perNumber, perPrefix *ratelimit.Limiter

	sent, exhausted *prometheus.CounterVec
	alertMu         sync.Mutex
	alerted         map[string]int64 // budget scope → last hour an alert was logged
}

// Options are the parts a Service is built from. Exactly one of Sender and
// Provider must be set.
type Options struct {
	Store    Store
	Sender   CodeSender
	Provider Provider
	Hasher   *phone.Hasher
	CodeKey  []byte // HMAC key for stored code hashes, ≥ 32 bytes
	Log      *slog.Logger
	Now      func() time.Time // nil for time.Now
	// Metrics, if set, receives the counters of codes sent and of sends
	// refused by a spent budget, by calling code.
	Metrics prometheus.Registerer
}

// New returns a Service.
func New(cfg Config, o Options) (*Service, error) {
	if (o.Sender == nil) == (o.Provider == nil) {
		return nil, errors.New("verify: exactly one of Sender and Provider is required")
	}
	if o.Store == nil || o.Hasher == nil || len(o.CodeKey) < 32 || o.Log == nil {
		return nil, errors.New("verify: Store, Hasher, Log and a 32-byte CodeKey are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cfg.fill()
	for n, code := range cfg.TestNumbers {
		if !validCode(code) {
			return nil, fmt.Errorf("verify: test number %s: code must be %d digits", n, CodeLen)
		}
	}
	s := &Service{
		cfg: cfg, store: o.Store, sender: o.Sender, provider: o.Provider,
		hasher: o.Hasher, codeKey: o.CodeKey, log: o.Log, now: o.Now,
		perIP:     ratelimit.New(cfg.PerIP, o.Now),
		perNumber: ratelimit.New(cfg.PerNumber, o.Now),
		perPrefix: ratelimit.New(cfg.PerPrefix, o.Now),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_sms_codes_sent_total", Help: "Verification codes sent (or started with the provider) by country calling code.",
		}, []string{"calling_code"}),
		exhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_sms_budget_exhausted_total", Help: "Verification sends refused because an hourly SMS budget (global or country) was spent, by budget and calling code.",
		}, []string{"budget", "calling_code"}),
		alerted: map[string]int64{},
	}
	if o.Metrics != nil {
		if err := o.Metrics.Register(s.sent); err != nil {
			return nil, fmt.Errorf("verify: register metrics: %w", err)
		}
		if err := o.Metrics.Register(s.exhausted); err != nil {
			return nil, fmt.Errorf("verify: register metrics: %w", err)
		}
	}
	return s, nil
}

// State is what a client learns about its session.
type State struct {
	Verified     bool
	Expires      time.Time
	NextSend     time.Time // zero when no further code may be sent
	AttemptsLeft int
}

func (s *Service) state(ss Session) State {
	st := State{Verified: !ss.Verified.IsZero(), Expires: ss.Expires, AttemptsLeft: max(0, s.cfg.MaxAttempts-ss.Attempts)}
	if !st.Verified && ss.Sends <= len(s.cfg.ResendDelays) {
		st.NextSend = ss.NextSend
	}
	return st
}

// Start opens a session for number and sends the first code. It answers the
// same whether or not the number is registered. The returned id is the
// session's bearer secret, to be kept by the client only.
func (s *Service) Start(ctx context.Context, number, clientIP string) (id string, st State, err error) {
	n, err := phone.Parse(number)
	if err != nil {
		return "", State{}, err
	}
	if err := s.checkCallingCode(n); err != nil {
		return "", State{}, err
	}
	if err := s.checkSendLimits(ctx, n, clientIP); err != nil {
		return "", State{}, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", State{}, fmt.Errorf("session id: %w", err)
	}
	id = base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.now()
	ss := Session{IDHash: hashID(id), Number: s.hasher.Hash(n), Expires: now.Add(s.cfg.SessionTTL)}
	if err := s.store.CreateSession(ctx, ss); err != nil {
		return "", State{}, fmt.Errorf("create verification session: %w", err)
	}
	ss, err = s.send(ctx, ss, n, now)
	if err != nil {
		return "", State{}, err
	}
	return id, s.state(ss), nil
}

// Resend sends a new code in an existing session. number must be the
// session's number (the relay keeps only its hash).
func (s *Service) Resend(ctx context.Context, id, number, clientIP string) (State, error) {
	n, err := phone.Parse(number)
	if err != nil {
		return State{}, err
	}
	now := s.now()
	ss, err := s.store.Session(ctx, hashID(id), now)
	if err != nil {
		return State{}, err
	}
	if s.hasher.Hash(n) != ss.Number {
		return State{}, ErrNotFound // do not confirm which number a session is for
	}
	if !ss.Verified.IsZero() {
		return State{}, ErrAlreadyVerified
	}
	if ss.Sends > len(s.cfg.ResendDelays) {
		return State{}, ErrTooManySends
	}
	if now.Before(ss.NextSend) {
		return State{}, &ratelimit.Error{RetryAfter: ss.NextSend.Sub(now)}
	}
	if err := s.checkSendLimits(ctx, n, clientIP); err != nil {
		return State{}, err
	}
	ss, err = s.send(ctx, ss, n, now)
	if err != nil {
		return State{}, err
	}
	return s.state(ss), nil
}

// send reserves a send in the database (so racing requests that read the
// same session cannot each send a code), generates (or has the provider
// generate) a code, delivers it and stores it. A send that fails after its
// reservation still counts.
func (s *Service) send(ctx context.Context, ss Session, n phone.Number, now time.Time) (Session, error) {
	delay := time.Duration(0)
	if ss.Sends < len(s.cfg.ResendDelays) {
		delay = s.cfg.ResendDelays[ss.Sends]
	}
	err := s.store.ReserveSend(ctx, ss.IDHash, ss.Sends, now, now.Add(delay))
	if errors.Is(err, ErrNotFound) {
		// Another request sent a code in this session since we read it.
		return ss, &ratelimit.Error{RetryAfter: max(delay, time.Second)}
	}
	if err != nil {
		return ss, fmt.Errorf("reserve verification send: %w", err)
	}
	ss.Sends++
	ss.NextSend = now.Add(delay)
	var codeHash []byte
	var ref string
	if code, ok := s.cfg.TestNumbers[n.String()]; ok {
		codeHash = s.hashCode(ss.IDHash, code)
	} else if s.provider != nil {
		r, err := s.provider.StartVerification(ctx, n)
		if err != nil {
			return ss, err
		}
		ref = r
	} else {
		code, err := newCode()
		if err != nil {
			return ss, err
		}
		if err := s.sender.SendCode(ctx, n, code); err != nil {
			return ss, err
		}
		codeHash = s.hashCode(ss.IDHash, code)
	}
	ss.CodeHash, ss.ProviderRef, ss.CodeExpires = codeHash, ref, now.Add(s.cfg.CodeTTL)
	err = s.store.SetCode(ctx, ss.IDHash, ss.Sends, codeHash, ref, ss.CodeExpires)
	if errors.Is(err, ErrNotFound) {
		// Verified, or another send reserved, while this code was sent.
		return ss, &ratelimit.Error{RetryAfter: max(delay, time.Second)}
	}
	if err != nil {
		return ss, fmt.Errorf("store verification code: %w", err)
	}
	if _, test := s.cfg.TestNumbers[n.String()]; !test {
		s.sent.WithLabelValues(n.CallingCode()).Inc()
	}
	s.log.InfoContext(ctx, "verification code sent", "number", n.Masked(), "send", ss.Sends)
	return ss, nil
}

// Check submits a code. A wrong code returns ErrWrongCode with the State
// telling how many attempts are left.
func (s *Service) Check(ctx context.Context, id, code string) (State, error) {
	if !validCode(code) {
		return State{}, ErrBadCode
	}
	now := s.now()
	h := hashID(id)
	ss, err := s.store.Session(ctx, h, now)
	if err != nil {
		return State{}, err
	}
	if !ss.Verified.IsZero() {
		return s.state(ss), nil
	}
	if ss.Sends == 0 || ss.CodeHash == nil && ss.ProviderRef == "" {
		return s.state(ss), ErrCodeExpired // no code stored (yet)
	}
	// The code is read again with the attempt's count: one replaced by a
	// resend since the read above must not be accepted.
	counted, err := s.store.ReserveAttempt(ctx, h, s.cfg.MaxAttempts, now)
	if errors.Is(err, ErrNoAttemptsLeft) {
		// Or the session went (registration, expiry) or was verified by a
		// parallel check since the read above: answer for what it is now.
		ss, rerr := s.store.Session(ctx, h, now)
		switch {
		case rerr != nil:
			return State{}, rerr
		case !ss.Verified.IsZero():
			return s.state(ss), nil
		}
		return s.state(ss), err
	}
	if err != nil {
		return State{}, err
	}
	ss = counted
	if !ss.Verified.IsZero() {
		return s.state(ss), nil
	}
	if ss.CodeHash == nil && ss.ProviderRef == "" {
		return s.state(ss), ErrCodeExpired // a resend is on its way
	}
	if now.After(ss.CodeExpires) {
		return s.state(ss), ErrCodeExpired
	}
	var ok bool
	if ss.CodeHash != nil {
		ok = hmac.Equal(ss.CodeHash, s.hashCode(h, code))
	} else {
		ok, err = s.provider.CheckVerification(ctx, ss.ProviderRef, code)
		if err != nil {
			return s.state(ss), err
		}
	}
	if !ok {
		return s.state(ss), ErrWrongCode
	}
	err = s.store.MarkVerified(ctx, h, ss.Sends, now)
	if errors.Is(err, ErrNotFound) {
		// A resend replaced the code after it was checked, or a parallel
		// check verified the session: this code is spent either way.
		ss, err := s.store.Session(ctx, h, now)
		if err != nil {
			return State{}, err
		}
		if !ss.Verified.IsZero() {
			return s.state(ss), nil
		}
		return s.state(ss), ErrCodeExpired
	}
	if err != nil {
		return State{}, fmt.Errorf("mark verified: %w", err)
	}
	ss.Verified = now
	return s.state(ss), nil
}

// State returns the session's state.
func (s *Service) State(ctx context.Context, id string) (State, error) {
	ss, err := s.store.Session(ctx, hashID(id), s.now())
	if err != nil {
		return State{}, err
	}
	return s.state(ss), nil
}

// VerifiedNumber returns the number hash of a verified, unexpired session
// and the id hash under which registration must consume it.
func (s *Service) VerifiedNumber(ctx context.Context, id string) (phone.Hash, [32]byte, error) {
	h := hashID(id)
	ss, err := s.store.Session(ctx, h, s.now())
	if err != nil {
		return phone.Hash{}, h, err
	}
	if ss.Verified.IsZero() {
		return phone.Hash{}, h, ErrNotVerified
	}
	return ss.Number, h, nil
}

// Sweep deletes expired sessions.
func (s *Service) Sweep(ctx context.Context) (int64, error) {
	return s.store.DeleteExpiredSessions(ctx, s.now())
}

func (s *Service) checkCallingCode(n phone.Number) error {
	cc := n.CallingCode()
	if s.cfg.DenyCallingCodes[cc] || len(s.cfg.AllowCallingCodes) > 0 && !s.cfg.AllowCallingCodes[cc] {
		return ErrCallingCodeBlocked
	}
	return nil
}

func (s *Service) checkSendLimits(ctx context.Context, n phone.Number, clientIP string) error {
	if _, ok := s.cfg.TestNumbers[n.String()]; ok {
		return nil // nothing is sent, nothing costs
	}
	nh := s.hasher.Hash(n)
	for _, c := range []struct {
		l   *ratelimit.Limiter
		key string
	}{{s.perIP, clientIP}, {s.perNumber, string(nh[:])}, {s.perPrefix, n.Prefix(s.cfg.PrefixDigits)}} {
		if ok, wait := c.l.Allow(c.key); !ok {
			return &ratelimit.Error{RetryAfter: wait}
		}
	}
	return s.takeBudget(ctx, n)
}

// takeBudget counts one send against the hourly country and global
// budgets, in the store so that every replica shares them. The first
// refusal of each budget in an hour is logged at error level on this node
// (an operator alert: someone may be pumping SMS); every refusal is counted
// in parley_sms_budget_exhausted_total.
func (s *Service) takeBudget(ctx context.Context, n phone.Number) error {
	cc := n.CallingCode()
	var budgets []Budget
	if s.cfg.CountryHourlyBudget > 0 {
		budgets = append(budgets, Budget{Scope: "country:" + cc, Limit: s.cfg.CountryHourlyBudget})
	}
	if s.cfg.HourlyBudget > 0 {
		budgets = append(budgets, Budget{Scope: "global", Limit: s.cfg.HourlyBudget})
	}
	if len(budgets) == 0 {
		return nil
	}
	now := s.now()
	hour := now.Unix() / 3600
	scope, err := s.store.TakeSendBudget(ctx, hour, budgets)
	if err != nil {
		return fmt.Errorf("take SMS budget: %w", err)
	}
	if scope == "" {
		return nil
	}
	kind, limit := "global", s.cfg.HourlyBudget
	if scope != "global" {
		kind, limit = "country", s.cfg.CountryHourlyBudget
	}
	s.exhausted.WithLabelValues(kind, cc).Inc()
	s.alertMu.Lock()
	first := s.alerted[scope] != hour
	s.alerted[scope] = hour
	for k, h := range s.alerted {
		if h < hour {
			delete(s.alerted, k)
		}
	}
	s.alertMu.Unlock()
	if first {
		s.log.ErrorContext(ctx, "SMS budget exhausted: verification codes refused until the hour ends (possible SMS pumping)",
			"budget", kind, "calling_code", cc, "limit_per_hour", limit)
	}
	return &BudgetError{Scope: kind, RetryAfter: time.Unix((hour+1)*3600, 0).Sub(now)}
}

func (s *Service) hashCode(idHash [32]byte, code string) []byte {
	m := hmac.New(sha256.New, s.codeKey)
	m.Write(idHash[:])
	m.Write([]byte(code))
	return m.Sum(nil)
}

func hashID(id string) [32]byte { return sha256.Sum256([]byte(id)) }

func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("generate code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

func validCode(c string) bool {
	if len(c) != CodeLen {
		return false
	}
	for i := range len(c) {
		if c[i] < '0' || c[i] > '9' {
			return false
		}
	}
	return true
}
