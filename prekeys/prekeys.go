// Package prekeys hands out prekey bundles so that a sender can start a
// Signal session with a device that is offline: each fetch claims at most one
// one-time EC and one one-time Kyber prekey per device, atomically, and falls
// back to the device's signed and last-resort keys when its pools are empty.
package prekeys

import (
	"context"
	"errors"
	"fmt"

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
	// CountPreKeys returns the device's pool sizes.
	CountPreKeys(ctx context.Context, account uuid.UUID, device int) (Counts, error)
}

// Service applies the prekey-depletion limits around a Store.
type Service struct {
	store       Store
	byRequester *ratelimit.Limiter
	byTarget    *ratelimit.Limiter
}

// NewService returns a Service limiting fetches per requesting account and
// per target account (so one requester, or many colluding ones, cannot drain
// a victim's pools and force every new session onto the last-resort key).
func NewService(s Store, perRequester, perTarget *ratelimit.Limiter) *Service {
	return &Service{store: s, byRequester: perRequester, byTarget: perTarget}
}

// Claim fetches a bundle for requester, subject to the limits; it returns a
// *ratelimit.Error when refused.
func (s *Service) Claim(ctx context.Context, requester, target uuid.UUID, device int) (Bundle, error) {
	if ok, wait := s.byRequester.Allow(requester.String()); !ok {
		return Bundle{}, &ratelimit.Error{RetryAfter: wait}
	}
	if ok, wait := s.byTarget.Allow(target.String()); !ok {
		return Bundle{}, &ratelimit.Error{RetryAfter: wait}
	}
	b, err := s.store.ClaimBundle(ctx, target, device)
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
