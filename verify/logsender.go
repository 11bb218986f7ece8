package verify

import (
	"context"
	"log/slog"

	"github.com/parleyhq/parley/phone"
)

// LogSender is the development CodeSender: it writes codes to the server
// log (number masked) instead of sending SMS. It is the only place the relay
// ever logs a code, and it is never used when an SMS provider is configured.
type LogSender struct {
	Log *slog.Logger
}

// SendCode logs code for n.
func (l LogSender) SendCode(ctx context.Context, n phone.Number, code string) error {
	l.Log.WarnContext(ctx, "development log sender: verification code (configure Twilio to send SMS)", "number", n.Masked(), "code", code)
	return nil
}
