// Package wire is the JSON that parleyd and its clients exchange over
// WebSockets: the device socket's frames (api/websocket.md) and the
// provisioning socket's. Both sides import it, so neither needs the
// other's packages; the HTTP bodies are described by api/openapi.yaml.
package wire

import (
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// Frames of the device socket (GET /v1/websocket: text, JSON), documented
// for client authors in api/websocket.md.

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
	// rate limit (parleyd --ws-frame-rate, --ws-frame-burst).
	CloseFrameRate = 4003
)

// MaxAckIDs bounds the ids of one ack frame; MaxClientFrame bounds any
// frame a client sends (a send with more ciphertext goes over HTTP);
// MaxRequestsInFlight and MaxRequestBytesInFlight bound the request frames
// of one connection being served at once, in number and in bytes (the
// connection's frames wait beyond them).
const (
	MaxAckIDs               = 1000
	MaxClientFrame          = 1 << 20
	MaxRequestsInFlight     = 16
	MaxRequestBytesInFlight = 4 << 20
)

// Frame is one WebSocket message in either direction.
type Frame struct {
	Type     string      `json:"type"`
	Envelope *Envelope   `json:"envelope,omitempty"`
	IDs      []uuid.UUID `json:"ids,omitempty"`
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

// Envelope is an envelope as delivered to a device.
type Envelope struct {
	ID   uuid.UUID `json:"id"`
	Type int       `json:"type"`
	// SourceAccount and SourceDevice are absent for a sealed-sender
	// envelope (type 6): its sender is inside the encryption.
	SourceAccount   uuid.UUID `json:"source_account,omitzero"`
	SourceDevice    int       `json:"source_device,omitzero"`
	Timestamp       int64     `json:"timestamp"`        // sender's clock, Unix ms
	ServerTimestamp int64     `json:"server_timestamp"` // relay's clock, Unix ms
	ExpiresAt       int64     `json:"expires_at,omitzero"`
	Urgent          bool      `json:"urgent,omitzero"`
	Online          bool      `json:"online,omitzero"`
	Content         []byte    `json:"content"` // base64
}

// ProvisioningFrame is what the provisioning socket (GET /v1/provisioning)
// sends, as JSON text messages: first {"type":"address"}, later
// {"type":"message"}.
type ProvisioningFrame struct {
	Type    string `json:"type"`
	Address string `json:"address,omitempty"`
	Body    []byte `json:"body,omitempty"`
}

// Provisioning limits and close codes.
const (
	// MaxProvisioningBody bounds a provisioning message. Besides the
	// account's keys it carries the account's contacts, groups and
	// conversation settings to the new device (about 200 bytes a contact).
	MaxProvisioningBody = 256 << 10
	// CloseProvisioningExpired closes a provisioning socket whose wait ran
	// out.
	CloseProvisioningExpired = 4002
	// ProvisioningTTL is how long a new device's provisioning socket waits
	// for its message.
	ProvisioningTTL = 10 * time.Minute
)
