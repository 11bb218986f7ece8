package cli

import (
	"context"
	"fmt"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/phone"
)

// Contact is someone this account knows by number.
type Contact struct {
	Number  string
	Account string
	// ExpireTimer is the conversation's disappearing-message timer in
	// seconds (0: off).
	ExpireTimer int64
}

// Contacts lists the people this account knows the number of, by number.
func (a *Account) Contacts(ctx context.Context) ([]Contact, error) {
	var out []Contact
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		rs, err := tx.Recipients(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Number == "" || r.Account == a.ID {
				continue
			}
			t, err := tx.Timer(ctx, r.Account)
			if err != nil {
				return err
			}
			out = append(out, Contact{Number: r.Number, Account: r.Account, ExpireTimer: t})
		}
		return nil
	})
	return out, local(err)
}

// UserStatus says whether a number is registered on the relay.
type UserStatus struct {
	Number     string
	Account    string // "" when not registered
	Registered bool
}

// UserStatuses asks the relay's directory about each number. Numbers
// nobody registered are reported, not failed; a malformed number or a
// refused lookup (rate limits) is an error.
func (a *Account) UserStatuses(ctx context.Context, numbers []string) ([]UserStatus, error) {
	if err := a.requireRegistered(); err != nil {
		return nil, err
	}
	out := make([]UserStatus, 0, len(numbers))
	for _, number := range numbers {
		n, err := phone.Parse(number)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrUsage, number, err)
		}
		id, err := a.relay.Lookup(ctx, n.String())
		switch {
		case relayclient.IsCode(err, "number_not_registered"):
			out = append(out, UserStatus{Number: n.String()})
		case err != nil:
			return nil, err
		default:
			out = append(out, UserStatus{Number: n.String(), Account: id, Registered: true})
		}
	}
	return out, nil
}
