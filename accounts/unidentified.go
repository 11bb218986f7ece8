package accounts

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// UnidentifiedAccessKeySize is the size of an unidentified-access key, as
// Signal derives it from a profile key (16 bytes).
const UnidentifiedAccessKeySize = 16

// UnidentifiedAccess is how an account accepts sealed-sender messages:
// from whoever presents Key (its contacts, who got its profile key inside
// encrypted messages), or from anyone when Unrestricted.
type UnidentifiedAccess struct {
	Key          []byte // nil: none set, only Unrestricted admits
	Unrestricted bool
}

// ErrUnidentifiedAccess refuses a sealed send: a missing or wrong key, or
// an unknown destination (the two are not told apart).
var ErrUnidentifiedAccess = errors.New("invalid unidentified access key")

// ErrBadUnidentifiedAccessKey reports a key of the wrong size.
var ErrBadUnidentifiedAccessKey = fmt.Errorf("unidentified access key must be %d bytes", UnidentifiedAccessKeySize)

// SetUnidentifiedAccess sets how the caller's account accepts sealed
// messages. Any device of the account may (every device holds the
// profile key).
func (s *Service) SetUnidentifiedAccess(ctx context.Context, p Principal, a UnidentifiedAccess) error {
	if a.Key != nil && len(a.Key) != UnidentifiedAccessKeySize {
		return ErrBadUnidentifiedAccessKey
	}
	if err := s.store.SetUnidentifiedAccess(ctx, p.Account, a); err != nil {
		return fmt.Errorf("set unidentified access: %w", err)
	}
	return nil
}

// CheckUnidentifiedAccess admits a sealed send to every account in to when
// presented is the XOR of their keys (for one account, its key), skipping
// accounts that allow unrestricted access. The comparison takes the same
// time whatever is wrong, and an unknown account is refused like a wrong
// key.
func (s *Service) CheckUnidentifiedAccess(ctx context.Context, to []uuid.UUID, presented []byte) error {
	if len(to) == 0 {
		return ErrUnidentifiedAccess
	}
	got, err := s.store.UnidentifiedAccess(ctx, to)
	if err != nil {
		return fmt.Errorf("check unidentified access: %w", err)
	}
	want := make([]byte, UnidentifiedAccessKeySize)
	ok := len(presented) == UnidentifiedAccessKeySize
	restricted := false
	for _, id := range to {
		a, known := got[id]
		if !known {
			ok = false
			continue
		}
		if a.Unrestricted {
			continue
		}
		restricted = true
		if len(a.Key) != UnidentifiedAccessKeySize {
			ok = false // no key set: only unrestricted access would admit
			continue
		}
		subtle.XORBytes(want, want, a.Key)
	}
	if !restricted {
		return errIf(!ok)
	}
	if len(presented) != UnidentifiedAccessKeySize {
		presented = make([]byte, UnidentifiedAccessKeySize) // compare anyway: same time
		ok = false
	}
	match := subtle.ConstantTimeCompare(want, presented) == 1
	return errIf(!ok || !match)
}

func errIf(refused bool) error {
	if refused {
		return ErrUnidentifiedAccess
	}
	return nil
}
