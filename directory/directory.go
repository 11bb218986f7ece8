// Package directory answers "which account is registered on this number?"
// for authenticated devices, so clients can address people by phone number
// while the relay keeps numbers only as keyed hashes.
//
// Lookups are rate-limited per requesting number and per client address,
// because the directory is the one place where a registered user could
// otherwise enumerate which numbers use the service. The per-requester
// budget is keyed on the requester's number hash, not its account id, so
// deleting the account and registering the number again does not refill it.
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

// DefaultRule is the lookup budget per requesting number: an address book
// of 100 at once, then 120 an hour; too little to walk a numbering plan.
var DefaultRule = ratelimit.Rule{Burst: 100, Every: 30 * time.Second}

// DefaultAddressRule is the lookup budget per client address (an IPv4
// address or an IPv6 /64), shared by every account behind it.
var DefaultAddressRule = ratelimit.Rule{Burst: 300, Every: 10 * time.Second}

// ErrNotRegistered reports that no account is registered on the number.
var ErrNotRegistered = errors.New("no account is registered on this number")

// Store finds accounts by number hash, and the requester's own account.
type Store interface {
	// AccountByNumber returns the account registered on number, or
	// accounts.ErrNotFound.
	AccountByNumber(ctx context.Context, number phone.Hash) (accounts.Account, error)
	// Account returns an account by id, or accounts.ErrNotFound.
	Account(ctx context.Context, id uuid.UUID) (accounts.Account, error)
}

// Service looks numbers up.
type Service struct {
	store   Store
	hasher  *phone.Hasher
	limit   *ratelimit.Limiter
	address *ratelimit.Limiter
}

// New returns a Service answering from s, hashing numbers with h, and
// limiting each requesting number by limit and each client address by
// address (nil: no limit).
func New(s Store, h *phone.Hasher, limit, address *ratelimit.Limiter) *Service {
	return &Service{store: s, hasher: h, limit: limit, address: address}
}

// Lookup returns the id of the account registered on number, for a
// requester calling from clientAddr. It returns phone.ErrInvalid for a
// malformed number, ErrNotRegistered, or *ratelimit.Error when the client
// address or the requester's number has used up its budget (both checked
// first, so refused lookups learn nothing).
func (s *Service) Lookup(ctx context.Context, requester accounts.Principal, clientAddr, number string) (uuid.UUID, error) {
	if ok, wait := s.address.Allow(clientAddr); !ok {
		return uuid.Nil, &ratelimit.Error{RetryAfter: wait}
	}
	me, err := s.store.Account(ctx, requester.Account)
	if err != nil {
		return uuid.Nil, fmt.Errorf("look up requester: %w", err)
	}
	if ok, wait := s.limit.Allow(string(me.Number[:])); !ok {
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
