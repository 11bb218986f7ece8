// Package accounts registers accounts on verified numbers, authenticates
// devices, enforces registration lock and manages an account's devices.
//
// An account is identified by a random UUID; its number is known to the relay
// only as a keyed hash. Devices authenticate every request with a random
// credential of their own, of which the relay stores only a salted keyed hash.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/phone"
)

// PrimaryDevice is the id of the device that registered the account.
const PrimaryDevice = 1

// Registration-lock policy.
const (
	LockAttemptsPerDay = 10
	LockLapse          = 7 * 24 * time.Hour // lock ignored after this long unseen
)

// Errors returned by Service and Store.
var (
	ErrNotFound     = errors.New("no such account or device")
	ErrUnauthorized = errors.New("invalid device credentials")
	ErrPrimary      = errors.New("the primary device cannot be removed; delete the account instead")
	// ErrSessionUsed reports a verification session that is not verified,
	// expired, or already used for a registration.
	ErrSessionUsed = errors.New("verification session is not verified or was already used")
)

// LockedError reports that the number has an active registration lock and
// the request did not present its token.
type LockedError struct {
	// AttemptsLeft is how many wrong tokens may still be tried today. The
	// error says nothing about when the lock lapses: that would tell
	// whoever holds the number when the account was last seen.
	AttemptsLeft int
	// Account is the locked account; Guessed says a wrong token was
	// presented (rather than none).
	Account uuid.UUID
	Guessed bool
}

func (e *LockedError) Error() string {
	if e.Guessed {
		return fmt.Sprintf("number is registration locked and the token is wrong (%d attempts left today); verify the number again to retry", e.AttemptsLeft)
	}
	return fmt.Sprintf("number is registration locked (%d attempts left today)", e.AttemptsLeft)
}

// Principal is an authenticated device.
type Principal struct {
	Account uuid.UUID
	Device  int
}

// Account is an account's stored state.
type Account struct {
	ID             uuid.UUID
	Number         phone.Hash
	IdentityKey    keys.ECPublicKey
	LockHash       []byte // nil when no registration lock is set
	LockFailures   int    // wrong lock tokens evaluated on LockFailureDay
	LockFailureDay int    // day (since the Unix epoch) of LockFailures
	LastSeenDay    int
}

// Device is one device of an account.
type Device struct {
	ID             int
	RegistrationID int
	CreatedDay     int
	LastSeenDay    int
}

// NewDevice is a device with its first key material, as stored at
// registration.
type NewDevice struct {
	RegistrationID int
	Credential     []byte // hashed
	SignedPreKey   keys.SignedPreKey
	LastResort     keys.KEMPreKey
	PreKeys        []keys.PreKey
	KEMPreKeys     []keys.KEMPreKey
}

// StoredRegistration is everything Store.Register writes.
type StoredRegistration struct {
	Session     [32]byte // verification session id hash, consumed
	Number      phone.Hash
	IdentityKey keys.ECPublicKey
	// Lock decides whether an existing account's registration lock lets
	// this registration replace it. nil replaces any account and clears its
	// lock.
	Lock   func(existing Account) LockDecision
	Device NewDevice
	Day    int
}

// LockDecision is what a registration-lock check decided about one
// registration, from the account as stored while the registration's
// transaction holds it.
type LockDecision struct {
	// Keep keeps the lock (its token was presented); otherwise the
	// registration clears it.
	Keep bool
	// Err, if set, refuses the registration: Register returns it and
	// changes nothing, unless Guessed.
	Err error
	// Guessed says a wrong token was evaluated: Register then counts one
	// more wrong token for Day and uses up the verification session (each
	// guess costs a fresh SMS verification), commits that, and returns Err.
	Guessed bool
}

// Store persists accounts and devices.
type Store interface {
	// AccountByNumber returns the account registered on number, or ErrNotFound.
	AccountByNumber(ctx context.Context, number phone.Hash) (Account, error)
	// Account returns the account, or ErrNotFound.
	Account(ctx context.Context, id uuid.UUID) (Account, error)
	// Register, in one transaction, consumes the verified session (returning
	// ErrSessionUsed if it is not verified, expired or gone), creates the
	// account for r.Number or, if one exists, keeps its id and replaces its
	// identity key and all its devices (their keys and queued data go too),
	// and stores the primary device with its keys. It returns the account id.
	//
	// When an account exists, Register calls r.Lock (if set) with it as
	// stored at that moment, holding it until the transaction ends, so
	// concurrent registrations of one number are decided one after another
	// on fresh state: that is what makes the daily limit on wrong lock
	// tokens exact. See LockDecision for what each outcome stores.
	Register(ctx context.Context, r StoredRegistration, now time.Time) (uuid.UUID, error)
	// SetRegistrationLock stores a lock hash, or clears the lock when nil.
	SetRegistrationLock(ctx context.Context, account uuid.UUID, hash []byte) error
	// SetUnidentifiedAccess stores how the account accepts sealed-sender
	// messages, or returns ErrNotFound.
	SetUnidentifiedAccess(ctx context.Context, account uuid.UUID, a UnidentifiedAccess) error
	// UnidentifiedAccess returns the settings of those accounts that exist.
	UnidentifiedAccess(ctx context.Context, accounts []uuid.UUID) (map[uuid.UUID]UnidentifiedAccess, error)
	// DeviceCredential returns a device's hashed credential and the day it
	// was last seen, or ErrNotFound.
	DeviceCredential(ctx context.Context, account uuid.UUID, device int) (hash []byte, lastSeenDay int, err error)
	// TouchDevice records that the device (and its account) was seen on day.
	TouchDevice(ctx context.Context, account uuid.UUID, device, day int) error
	// Devices lists the account's devices by id.
	Devices(ctx context.Context, account uuid.UUID) ([]Device, error)
	// RemoveDevice deletes a device with its keys and queued data, or
	// returns ErrNotFound.
	RemoveDevice(ctx context.Context, account uuid.UUID, device int) error
	// DeleteAccount deletes the account and everything it owns, or returns
	// ErrNotFound.
	DeleteAccount(ctx context.Context, account uuid.UUID) error
	// CreateLinkCode stores the hash of a one-time link code for account.
	CreateLinkCode(ctx context.Context, hash []byte, account uuid.UUID, expires time.Time) error
	// LinkCodeValid reports, without consuming it, whether the link code
	// exists for account and has not expired at now: the cheap check made
	// before a link request's signatures are verified.
	LinkCodeValid(ctx context.Context, codeHash []byte, account uuid.UUID, now time.Time) (bool, error)
	// LinkDevice, in one transaction, consumes the link code (ErrBadLinkCode
	// unless it exists for account and has not expired at now) and adds the
	// device under the next free id (ErrTooManyDevices if the account has
	// maxDevices), returning the id.
	LinkDevice(ctx context.Context, codeHash []byte, account uuid.UUID, d NewDevice, now time.Time, maxDevices int) (int, error)
}

// NumberVerifier is what registration needs from phone verification.
type NumberVerifier interface {
	VerifiedNumber(ctx context.Context, sessionID string) (phone.Hash, [32]byte, error)
}

// Service implements account operations.
type Service struct {
	store    Store
	verifier NumberVerifier
	creds    secretHasher
	locks    secretHasher
	log      *slog.Logger
	now      func() time.Time
	// OnDevicesRemoved, if set, is called after devices stop existing or
	// their credentials are replaced (device removal, account deletion,
	// re-registration), so live connections can be closed at once.
	// device is 0 when every device of the account is affected.
	OnDevicesRemoved func(account uuid.UUID, device int)
	// OnSignatureChecks, if set, is told how many key signatures a
	// registration or device link is about to verify: the costly part of
	// an unauthenticated request, counted for the metrics.
	OnSignatureChecks func(n int)
}

// New returns a Service. credKey and lockKey (≥ 32 bytes each) key the
// stored hashes of device credentials and registration-lock tokens.
func New(s Store, v NumberVerifier, credKey, lockKey []byte, log *slog.Logger, now func() time.Time) (*Service, error) {
	if len(credKey) < 32 || len(lockKey) < 32 {
		return nil, errShortKey
	}
	if now == nil {
		now = time.Now
	}
	return &Service{store: s, verifier: v, creds: secretHasher{credKey}, locks: secretHasher{lockKey}, log: log, now: now}, nil
}

// Registration is a client's request to register a number.
type Registration struct {
	SessionID      string
	Credential     string
	RegistrationID int
	IdentityKey    keys.ECPublicKey
	SignedPreKey   keys.SignedPreKey
	LastResort     keys.KEMPreKey
	PreKeys        []keys.PreKey
	KEMPreKeys     []keys.KEMPreKey
	LockToken      []byte // optional
}

// ErrBadRegistrationID reports a registration id outside 1..16380.
var ErrBadRegistrationID = errors.New("registration id must be between 1 and 16380")

// Register creates (or re-creates) the account on the session's verified
// number and returns its id; the registering device is PrimaryDevice.
// It returns *LockedError when the number's lock applies and r.LockToken
// does not match. Cheap checks come first: the session is looked up before
// any signature is verified, so a bogus session costs no signature checks.
func (s *Service) Register(ctx context.Context, r Registration) (uuid.UUID, error) {
	if err := CheckCredentialFormat(r.Credential); err != nil {
		return uuid.Nil, err
	}
	if r.RegistrationID < 1 || r.RegistrationID > 16380 {
		return uuid.Nil, ErrBadRegistrationID
	}
	number, session, err := s.verifier.VerifiedNumber(ctx, r.SessionID)
	if err != nil {
		return uuid.Nil, err
	}
	up := keys.Upload{SignedPreKey: &r.SignedPreKey, LastResort: &r.LastResort, PreKeys: r.PreKeys, KEMPreKeys: r.KEMPreKeys}
	if s.OnSignatureChecks != nil {
		s.OnSignatureChecks(up.Signatures())
	}
	if err := up.Validate(r.IdentityKey); err != nil {
		return uuid.Nil, err
	}
	cred, err := s.creds.hash([]byte(r.Credential))
	if err != nil {
		return uuid.Nil, err
	}
	now := s.now()
	replaced := false
	id, err := s.store.Register(ctx, StoredRegistration{
		Session: session, Number: number, IdentityKey: r.IdentityKey, Day: day(now),
		Lock: func(existing Account) LockDecision {
			replaced = true
			return s.checkLock(existing, r.LockToken, now)
		},
		Device: NewDevice{
			RegistrationID: r.RegistrationID, Credential: cred, SignedPreKey: r.SignedPreKey,
			LastResort: r.LastResort, PreKeys: r.PreKeys, KEMPreKeys: r.KEMPreKeys,
		},
	}, now)
	var locked *LockedError
	if errors.As(err, &locked) {
		if locked.Guessed {
			s.log.WarnContext(ctx, "registration lock failure", "account", locked.Account, "attempts_left", locked.AttemptsLeft)
		}
		return uuid.Nil, err
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("register: %w", err)
	}
	s.log.InfoContext(ctx, "account registered", "account", id, "reregistration", replaced)
	if replaced {
		s.removed(id, 0) // the old devices' credentials no longer exist
	}
	return id, nil
}

// checkLock decides whether a re-registration may replace a, and whether
// the lock stays. It runs inside Store.Register's transaction on a as it is
// stored then, so the daily count it checks cannot be stale: at most
// LockAttemptsPerDay wrong tokens are ever evaluated per account per day,
// however many requests race.
func (s *Service) checkLock(a Account, token []byte, now time.Time) LockDecision {
	if a.LockHash == nil {
		return LockDecision{}
	}
	lapses := time.Unix(int64(a.LastSeenDay+1)*86400, 0).Add(LockLapse)
	if !now.Before(lapses) {
		return LockDecision{} // unseen for a week: the lock lapsed
	}
	failures := 0
	if a.LockFailureDay == day(now) {
		failures = a.LockFailures
	}
	locked := &LockedError{Account: a.ID, AttemptsLeft: max(0, LockAttemptsPerDay-failures)}
	if failures >= LockAttemptsPerDay || len(token) == 0 { // presenting no token is not a guess
		return LockDecision{Err: locked}
	}
	if len(token) == LockTokenSize && s.locks.check(a.LockHash, token) {
		return LockDecision{Keep: true}
	}
	locked.Guessed = true
	locked.AttemptsLeft--
	return LockDecision{Err: locked, Guessed: true}
}

// SetRegistrationLock sets the account's lock to token (LockTokenSize bytes,
// derived by the client from its PIN), or clears it when token is nil.
func (s *Service) SetRegistrationLock(ctx context.Context, p Principal, token []byte) error {
	if p.Device != PrimaryDevice {
		return ErrForbidden
	}
	var h []byte
	if token != nil {
		if len(token) != LockTokenSize {
			return ErrBadLockToken
		}
		var err error
		if h, err = s.locks.hash(token); err != nil {
			return err
		}
	}
	if err := s.store.SetRegistrationLock(ctx, p.Account, h); err != nil {
		return fmt.Errorf("set registration lock: %w", err)
	}
	return nil
}

// More errors.
var (
	ErrForbidden    = errors.New("only the primary device may do this")
	ErrBadLockToken = fmt.Errorf("registration lock token must be %d bytes", LockTokenSize)
)

// Authenticate checks HTTP Basic credentials "accountid.deviceid:secret".
// Every failure returns ErrUnauthorized after the same amount of hashing.
func (s *Service) Authenticate(ctx context.Context, username, password string) (Principal, error) {
	p, perr := parseUsername(username)
	var stored []byte
	lastSeen := -1
	if perr == nil {
		var err error
		stored, lastSeen, err = s.store.DeviceCredential(ctx, p.Account, p.Device)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Principal{}, fmt.Errorf("authenticate: %w", err)
		}
	}
	if !s.creds.check(stored, []byte(password)) || perr != nil || stored == nil {
		return Principal{}, ErrUnauthorized
	}
	if today := day(s.now()); lastSeen < today {
		if err := s.store.TouchDevice(ctx, p.Account, p.Device, today); err != nil {
			return Principal{}, fmt.Errorf("record last seen: %w", err)
		}
	}
	return p, nil
}

func parseUsername(u string) (Principal, error) {
	acct, dev, ok := strings.Cut(u, ".")
	if !ok || len(acct) != 36 {
		return Principal{}, ErrUnauthorized
	}
	id, err := uuid.Parse(acct)
	if err != nil {
		return Principal{}, ErrUnauthorized
	}
	d, err := strconv.Atoi(dev)
	if err != nil || d < 1 || d > 127 || strconv.Itoa(d) != dev {
		return Principal{}, ErrUnauthorized
	}
	return Principal{Account: id, Device: d}, nil
}

// Account returns the account.
func (s *Service) Account(ctx context.Context, id uuid.UUID) (Account, error) {
	return s.store.Account(ctx, id)
}

// Devices lists the caller's devices.
func (s *Service) Devices(ctx context.Context, p Principal) ([]Device, error) {
	return s.store.Devices(ctx, p.Account)
}

// RemoveDevice removes one of the caller's devices: the primary may remove
// any other device, other devices only themselves. Its credential stops
// working at once.
func (s *Service) RemoveDevice(ctx context.Context, p Principal, device int) error {
	if device == PrimaryDevice {
		return ErrPrimary
	}
	if p.Device != PrimaryDevice && p.Device != device {
		return ErrForbidden
	}
	if err := s.store.RemoveDevice(ctx, p.Account, device); err != nil {
		return fmt.Errorf("remove device: %w", err)
	}
	s.log.InfoContext(ctx, "device removed", "account", p.Account, "device", device, "by", p.Device)
	s.removed(p.Account, device)
	return nil
}

// DeleteAccount deletes the caller's account with all its keys and data.
func (s *Service) DeleteAccount(ctx context.Context, p Principal) error {
	if p.Device != PrimaryDevice {
		return ErrForbidden
	}
	if err := s.store.DeleteAccount(ctx, p.Account); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	s.log.InfoContext(ctx, "account deleted", "account", p.Account)
	s.removed(p.Account, 0)
	return nil
}

func (s *Service) removed(account uuid.UUID, device int) {
	if s.OnDevicesRemoved != nil {
		s.OnDevicesRemoved(account, device)
	}
}

// day returns whole days since the Unix epoch: last-seen times are kept at
// day granularity to store less about users.
func day(t time.Time) int { return int(t.Unix() / 86400) }
