package relayclient

import (
	"context"
	"fmt"
	"net/url"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/wire"
)

// LinkCode asks the relay for a one-time code that lets one new device
// join this (primary) device's account.
func (c *Client) LinkCode(ctx context.Context) (string, error) {
	var out struct {
		Code string `json:"code"`
	}
	_, err := c.do(ctx, "POST", "/v1/devices/link-code", nil, nil, &out)
	return out.Code, err
}

// Link is a new device's request to join an account.
type Link struct {
	AccountID       string      `json:"account_id"`
	Code            string      `json:"code"`
	Credential      string      `json:"credential"`
	RegistrationID  uint32      `json:"registration_id"`
	SignedPreKey    SignedKey   `json:"signed_prekey"`
	PQLastResortKey SignedKey   `json:"pq_last_resort_prekey"`
	PreKeys         []SignedKey `json:"prekeys"`
	PQPreKeys       []SignedKey `json:"pq_prekeys"`
}

// LinkDevice adds this device to an account and returns its device id.
func (c *Client) LinkDevice(ctx context.Context, l Link) (int, error) {
	var out struct {
		DeviceID int `json:"device_id"`
	}
	_, err := c.do(ctx, "POST", "/v1/devices/link", nil, l, &out)
	return out.DeviceID, err
}

// DeliverProvisioning drops a sealed provisioning message at address.
func (c *Client) DeliverProvisioning(ctx context.Context, address string, body []byte) error {
	_, err := c.do(ctx, "PUT", "/v1/provisioning/"+url.PathEscape(address), nil, map[string]any{"body": body}, nil)
	return err
}

// ProvisioningSocket is a new device waiting for its provisioning message.
type ProvisioningSocket struct {
	conn *websocket.Conn
	// Address is where the primary device must deliver.
	Address string
}

// WaitForProvisioning opens the provisioning socket and reads its address.
func (c *Client) WaitForProvisioning(ctx context.Context) (*ProvisioningSocket, error) {
	u := *c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/v1/provisioning"
	conn, _, err := c.dialer().DialContext(ctx, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: provisioning socket: %w", ErrUnavailable, err)
	}
	conn.SetReadLimit(2 * wire.MaxProvisioningBody) // base64 in a JSON frame
	var f wire.ProvisioningFrame
	if err := readFrame(conn, &f); err != nil || f.Type != "address" || f.Address == "" {
		conn.Close()
		return nil, fmt.Errorf("%w: the provisioning socket sent no address (%v)", ErrUnavailable, err)
	}
	return &ProvisioningSocket{conn: conn, Address: f.Address}, nil
}

// Message waits for the sealed provisioning message (until ctx ends or the
// relay gives up after its timeout).
func (p *ProvisioningSocket) Message(ctx context.Context) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()
	var f wire.ProvisioningFrame
	if err := readFrame(p.conn, &f); err != nil {
		if websocket.IsCloseError(err, wire.CloseProvisioningExpired) {
			return nil, fmt.Errorf("no device approved the link within %v", wire.ProvisioningTTL)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: provisioning socket: %w", ErrUnavailable, err)
	}
	if f.Type != "message" || len(f.Body) == 0 {
		return nil, fmt.Errorf("%w: unexpected provisioning frame %q", ErrUnavailable, f.Type)
	}
	return f.Body, nil
}

// Close hangs up.
func (p *ProvisioningSocket) Close() error { return p.conn.Close() }

// readFrame reads one frame of the provisioning socket.
func readFrame(conn *websocket.Conn, f *wire.ProvisioningFrame) error {
	_, data, err := conn.ReadMessage()
	if err != nil {
		return err
	}
	return wire.Decode(data, f, false)
}
