package cli

import (
	"errors"

	"github.com/parleyhq/parley/cli/relayclient"
)

// Exit codes, as signal-cli uses them; the daemon's JSON-RPC errors carry
// their negation.
const (
	ExitOK         = 0
	ExitUser       = 1 // bad arguments, unknown account, refused by the relay for a user reason
	ExitUnexpected = 2 // a bug or a local failure
	ExitIO         = 3 // the relay could not be reached or failed
	ExitUntrusted  = 4 // a recipient's identity key is not trusted
	ExitRateLimit  = 5 // the relay rate-limited us
)

// ExitCode classifies err for scripts.
func ExitCode(err error) int {
	var untrusted *UntrustedError
	var re *relayclient.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &untrusted):
		return ExitUntrusted
	case errors.Is(err, ErrUsage):
		return ExitUser
	case errors.As(err, &re) && re.Status == 429:
		return ExitRateLimit
	case errors.As(err, &re) && re.Status >= 500:
		return ExitIO
	case errors.As(err, &re):
		return ExitUser
	case errors.Is(err, relayclient.ErrUnavailable):
		return ExitIO
	}
	return ExitUnexpected
}
