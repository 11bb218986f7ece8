// Package prekeys hands out prekey bundles so that a sender can start a
// Signal session with a device that is offline: each fetch claims at most one
// one-time EC and one one-time Kyber prekey per device, atomically, and falls
// back to the device's signed and last-resort keys when its pools are empty.
package prekeys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/ratelimit"
)

// AllDevices asks Claim for a bundle from every device of an account.
const AllDevices = 0

// LowWater is the pool size below which a device should upload more
// one-time prekeys; Counts reports it so clients know when to top up.
const LowWater = 10

// ErrNotFound reports an unknown account or device.
var ErrNotFound = errors.New("no such account or device")

// Bundle is what a sender needs to start sessions with an account's devices.
type Bundle struct {
	IdentityKey keys.ECPublicKey
	Devices     []DeviceBundle // ordered by device id
}

// DeviceBundle is one device's share of a Bundle.
type DeviceBundle struct {
	DeviceID       int
	RegistrationID int
	SignedPreKey   keys.SignedPreKey
	// PreKey is a claimed one-time EC prekey, or nil if the pool was empty.
	PreKey *keys.PreKey
	// KEMPreKey is a claimed one-time Kyber prekey or, if that pool was
	// empty, the last-resort Kyber prekey (then LastResort is true).
	KEMPreKey  keys.KEMPreKey
	LastResort bool
}

// Counts is how many unclaimed one-time prekeys a device has.
type Counts struct {
	EC  int
	KEM int
}

// Store claims and counts one-time prekeys.
type Store interface {
	// ClaimBundle assembles the bundle for one device of account, or for all
	// of them when device is AllDevices. Within one transaction it removes
	// and returns the lowest-id one-time EC and Kyber prekey of each device,
	// so concurrent callers never receive the same one-time key. It returns
	// ErrNotFound if the account (or the named device) does not exist.
	ClaimBundle(ctx context.Context, account uuid.UUID, device int) (Bundle, error)
	// LastResortBundle is ClaimBundle without one-time prekeys: signed and
	// last-resort keys only, claiming nothing.
	LastResortBundle(ctx context.Context, account uuid.UUID, device int) (Bundle, error)
	// CountPreKeys returns the device's pool sizes.
	CountPreKeys(ctx context.Context, account uuid.UUID, device int) (Counts, error)
}

// Service applies the prekey-depletion limits around a Store.
type Service struct {
	store       Store
	byRequester *ratelimit.Limiter
	byPair      *ratelimit.Limiter
	byTarget    *ratelimit.Limiter
}

// Limits are the bundle-fetch limits of a Service (nil: no limit).
type Limits struct {
	// PerRequester bounds all fetches of one requesting account.
	PerRequester *ratelimit.Limiter
	// PerPair bounds one requester's fetches of one target account, so no
	// requester can use up a target's budget for others.
	PerPair *ratelimit.Limiter
	// PerTarget bounds how many fetches of one target account claim
	// one-time prekeys. Past it a fetch is still answered, with the signed
	// and last-resort keys only: colluding requesters can make new
	// sessions with the target use the last-resort key, but cannot make
	// the target unreachable.
	PerTarget *ratelimit.Limiter
}

// Default bundle-fetch rules: a requester may fetch 100 bundles at once
// then 1/s overall, and 10 of one target then 1 a minute; a target hands
// out one-time prekeys to 50 fetches at once, then 1 per 2 s.
var (
	DefaultRequesterRule = ratelimit.Rule{Burst: 100, Every: time.Second}
	DefaultPairRule      = ratelimit.Rule{Burst: 10, Every: time.Minute}
	DefaultTargetRule    = ratelimit.Rule{Burst: 50, Every: 2 * time.Second}
)

// NewService returns a Service applying l around s.
func NewService(s Store, l Limits) *Service {
	return &Service{store: s, byRequester: l.PerRequester, byPair: l.PerPair, byTarget: l.PerTarget}
}

// Claim fetches a bundle for requester, subject to the limits; it returns a
// *ratelimit.Error when the requester's own budgets are used up. When the
// target's one-time prekey budget is used up, the bundle has no one-time
// prekeys (LastResort is set) instead of being refused.
func (s *Service) Claim(ctx context.Context, requester, target uuid.UUID, device int) (Bundle, error) {
	if ok, wait := s.byRequester.Allow(requester.String()); !ok {
		return Bundle{}, &ratelimit.Error{RetryAfter: wait}
	}
	if ok, wait := s.byPair.Allow(requester.String() + "/" + target.String()); !ok {
		return Bundle{}, &ratelimit.Error{RetryAfter: wait}
	}
	claim := s.store.ClaimBundle
	if ok, _ := s.byTarget.Allow(target.String()); !ok {
		claim = s.store.LastResortBundle
	}
	b, err := claim(ctx, target, device)
	if err != nil {
		return Bundle{}, fmt.Errorf("claim prekeys: %w", err)
	}
	return b, nil
}

// Count returns the device's pool sizes.
func (s *Service) Count(ctx context.Context, account uuid.UUID, device int) (Counts, error) {
	c, err := s.store.CountPreKeys(ctx, account, device)
	if err != nil {
		return Counts{}, fmt.Errorf("count prekeys: %w", err)
	}
	return c, nil
}
