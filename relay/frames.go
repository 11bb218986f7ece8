package relay

import (
	"context"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/wire"
)

// RequestFunc serves one request frame of device p's connection and
// returns its response frame. ctx ends when the connection closes.
type RequestFunc func(ctx context.Context, p accounts.Principal, req wire.Frame) wire.Frame

// wireEnvelope is e as a device receives it.
func wireEnvelope(e Envelope) *wire.Envelope {
	w := &wire.Envelope{
		ID: e.ID, Type: e.Type, SourceAccount: e.SourceAccount, SourceDevice: e.SourceDevice,
		Timestamp: e.ClientTimestamp, ServerTimestamp: e.ServerTimestamp.UnixMilli(),
		Urgent: e.Urgent, Online: e.Online, Content: e.Content,
	}
	if !e.ExpiresAt.IsZero() {
		w.ExpiresAt = e.ExpiresAt.UnixMilli()
	}
	return w
}

func timeMS(ms int64) time.Time { return time.UnixMilli(ms) }
