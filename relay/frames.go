package relay

import (
	"context"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
)

// WebSocket frames (text, JSON). websocket.md next to the API's openapi.yaml
// documents them for client authors.

// Frame types.
const (
	FrameEnvelope   = "envelope"    // server → client: one envelope
	FrameQueueEmpty = "queue_empty" // server → client: the stored queue has been sent
	FrameAck        = "ack"         // client → server: acknowledge envelopes by id
	FrameRequest    = "request"     // client → server: an API request (a message send)
	FrameResponse   = "response"    // server → client: the answer to a request, by id
)

// Close codes the relay uses besides the standard ones (1001 going away on
// shutdown, 1008 for a malformed frame, 1009 for an oversized one, 1011
// for an internal error).
const (
	// CloseReplaced: the device opened a newer connection.
	CloseReplaced = 4000
	// CloseDeviceRemoved: the device was removed, its account deleted or
	// re-registered; its credential no longer works.
	CloseDeviceRemoved = 4001
	// CloseFrameRate: the device sent frames faster than the relay's frame
	// rate limit (Config.FrameRate, FrameBurst).
	CloseFrameRate = 4003
)

// MaxAckIDs bounds the ids of one ack frame; MaxClientFrame bounds any
// frame a client sends (a send with more ciphertext goes over HTTP);
// MaxRequestsInFlight bounds the requests of one connection being served at
// once (the connection's frames wait beyond it).
const (
	MaxAckIDs           = 1000
	MaxClientFrame      = 1 << 20
	MaxRequestsInFlight = 16
)

// Frame is one WebSocket message in either direction.
type Frame struct {
	Type     string        `json:"type"`
	Envelope *WireEnvelope `json:"envelope,omitempty"`
	IDs      []uuid.UUID   `json:"ids,omitempty"`
	// Request and response frames: the client's id for the request (1 or
	// more, echoed in the response), the HTTP verb, path and headers of
	// the request, the answer's status and headers, and either one's
	// JSON body, exactly as over HTTP.
	ID      uint64            `json:"id,omitzero"`
	Verb    string            `json:"verb,omitempty"`
	Path    string            `json:"path,omitempty"`
	Status  int               `json:"status,omitzero"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    jsontext.Value    `json:"body,omitempty"`
}

// RequestFunc serves one request frame of device p's connection and
// returns its response frame. ctx ends when the connection closes.
type RequestFunc func(ctx context.Context, p accounts.Principal, req Frame) Frame

// WireEnvelope is an envelope as delivered to a device.
type WireEnvelope struct {
	ID              uuid.UUID `json:"id"`
	Type            int       `json:"type"`
	SourceAccount   uuid.UUID `json:"source_account"`
	SourceDevice    int       `json:"source_device"`
	Timestamp       int64     `json:"timestamp"`        // sender's clock, Unix ms
	ServerTimestamp int64     `json:"server_timestamp"` // relay's clock, Unix ms
	ExpiresAt       int64     `json:"expires_at,omitzero"`
	Urgent          bool      `json:"urgent,omitzero"`
	Online          bool      `json:"online,omitzero"`
	Content         []byte    `json:"content"` // base64
}

func wireEnvelope(e Envelope) *WireEnvelope {
	w := &WireEnvelope{
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
