// Package directory answers "which account is registered on this number?"
// for authenticated devices, so clients can address people by phone number
// while the relay keeps numbers only as keyed hashes.
//
// Lookups are rate-limited per requesting account, because the directory is
// the one place where a registered user could otherwise enumerate which
// numbers use the service.
package directory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/ratelimit"
)

// DefaultRule is the lookup budget per requesting account: enough to look up
// an address book once, too little to walk a numbering plan.
var DefaultRule = ratelimit.Rule{Burst: 200, Every: 6 * time.Second}

// ErrNotRegistered reports that no account is registered on the number.
var ErrNotRegistered = errors.New("no account is registered on this number")

// Store finds accounts by number hash.
type Store interface {
	// AccountByNumber returns the account registered on number, or
	// accounts.ErrNotFound.
	AccountByNumber(ctx context.Context, number phone.Hash) (accounts.Account, error)
}

// Service looks numbers up.
type Service struct {
	store  Store
	hasher *phone.Hasher
	limit  *ratelimit.Limiter
}

// New returns a Service answering from s, hashing numbers with h, and
// limiting each requesting account by limit (nil: no limit).
func New(s Store, h *phone.Hasher, limit *ratelimit.Limiter) *Service {
	return &Service{store: s, hasher: h, limit: limit}
}

// Lookup returns the id of the account registered on number. It returns
// phone.ErrInvalid for a malformed number, ErrNotRegistered, or
// *ratelimit.Error when the requester has used up its budget (checked
// first, so refused lookups learn nothing).
func (s *Service) Lookup(ctx context.Context, requester accounts.Principal, number string) (uuid.UUID, error) {
	if ok, wait := s.limit.Allow(requester.Account.String()); !ok {
		return uuid.Nil, &ratelimit.Error{RetryAfter: wait}
	}
	n, err := phone.Parse(number)
	if err != nil {
		return uuid.Nil, err
	}
	a, err := s.store.AccountByNumber(ctx, s.hasher.Hash(n))
	switch {
	case errors.Is(err, accounts.ErrNotFound):
		return uuid.Nil, ErrNotRegistered
	case err != nil:
		return uuid.Nil, fmt.Errorf("look up number: %w", err)
	}
	return a.ID, nil
}
