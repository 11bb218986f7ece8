package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/safetynumber"
)

// Identity is a contact's identity key as we know it.
type Identity struct {
	Number       string `json:"number,omitzero"`
	Account      string `json:"account"`
	TrustLevel   string `json:"trust_level"`
	AddedMS      int64  `json:"added_timestamp"`
	Fingerprint  string `json:"fingerprint"`   // hex of the identity key
	SafetyNumber string `json:"safety_number"` // "" while the number is unknown
}

var trustNames = map[int]string{
	clientdb.Untrusted:         "UNTRUSTED",
	clientdb.TrustedUnverified: "TRUSTED_UNVERIFIED",
	clientdb.TrustedVerified:   "TRUSTED_VERIFIED",
}

// Identities lists known identity keys; number filters to one contact.
func (a *Account) Identities(ctx context.Context, number string) ([]Identity, error) {
	if err := a.requireRegistered(); err != nil {
		return nil, err
	}
	var rs []clientdb.Recipient
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		if number == "" {
			rs, err = tx.Recipients(ctx)
			return err
		}
		n, err := phone.Parse(number)
		if err != nil {
			return fmt.Errorf("%w: %q: %v", ErrUsage, number, err)
		}
		r, err := tx.RecipientByNumber(ctx, n.String())
		if errors.Is(err, clientdb.ErrNotFound) {
			return fmt.Errorf("%w: no identity known for %s (exchange a message first)", ErrUsage, n)
		}
		rs = []clientdb.Recipient{r}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []Identity
	for _, r := range rs {
		if r.IdentityKey == nil || r.Account == a.ID {
			continue // our own other devices share our key: not a contact
		}
		id := Identity{Number: r.Number, Account: r.Account, TrustLevel: trustNames[r.Trust], AddedMS: r.KeyAddedMS,
			Fingerprint: fmt.Sprintf("%x", r.IdentityKey)}
		if r.Number != "" {
			id.SafetyNumber = safetynumber.Compute(a.IdentityKey(), a.Number, r.IdentityKey, r.Number)
		}
		out = append(out, id)
	}
	return out, nil
}

// Trust marks a contact's current identity key as trusted: verified when
// the safety number the user compared matches, unverified with
// verifiedSafetyNumber "" (signal-cli's --trust-all-known-keys).
func (a *Account) Trust(ctx context.Context, number, verifiedSafetyNumber string) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	n, err := phone.Parse(number)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrUsage, number, err)
	}
	want := ""
	if verifiedSafetyNumber != "" {
		if want, err = safetynumber.Normalize(verifiedSafetyNumber); err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	return a.db.Update(ctx, func(tx *clientdb.Tx) error {
		r, err := tx.RecipientByNumber(ctx, n.String())
		if errors.Is(err, clientdb.ErrNotFound) || (err == nil && r.IdentityKey == nil) {
			return fmt.Errorf("%w: no identity known for %s (exchange a message first)", ErrUsage, n)
		}
		if err != nil {
			return err
		}
		r.Trust = clientdb.TrustedUnverified
		if want != "" {
			if !safetynumber.Equal(want, safetynumber.Compute(a.IdentityKey(), a.Number, r.IdentityKey, r.Number)) {
				return fmt.Errorf("%w: the safety number does not match %s's current identity key; nothing changed", ErrUsage, n)
			}
			r.Trust = clientdb.TrustedVerified
		}
		return tx.PutRecipient(ctx, r)
	})
}
