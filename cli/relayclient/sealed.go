package relayclient

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"time"
)

// unidentifiedAccessHeader carries a sealed send's unidentified-access key
// instead of device credentials.
const unidentifiedAccessHeader = "Unidentified-Access-Key"

// SendSealed submits sealed-sender envelopes (type 6) for every device of
// account, admitted by its unidentified-access key: no device credentials
// go with it, and it always travels over plain HTTP (the authenticated
// socket would name the sender).
func (c *Client) SendSealed(ctx context.Context, account string, s Send, idempotencyKey string, accessKey []byte) (Sent, error) {
	h := http.Header{unidentifiedAccessHeader: {base64.StdEncoding.EncodeToString(accessKey)}}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	var out Sent
	_, err := c.do(ctx, "PUT", "/v1/messages/"+url.PathEscape(account), h, s, &out)
	return out, err
}

// SenderCertificate fetches a sender certificate for this device: proof,
// signed by the relay under its operator's trust root, of our account,
// device and identity key, until it expires.
func (c *Client) SenderCertificate(ctx context.Context) (cert []byte, expires time.Time, err error) {
	var out struct {
		Certificate []byte `json:"certificate"`
		Expires     int64  `json:"expires"`
	}
	_, err = c.do(ctx, "GET", "/v1/certificate/delivery", nil, nil, &out)
	return out.Certificate, time.UnixMilli(out.Expires), err
}

// TrustRoot fetches the operator trust root the relay's sender
// certificates chain to (404 sealed_sender_disabled when it has none).
func (c *Client) TrustRoot(ctx context.Context) ([]byte, error) {
	var out struct {
		TrustRoot []byte `json:"trust_root"`
	}
	_, err := c.do(ctx, "GET", "/v1/certificate/trust-root", nil, nil, &out)
	return out.TrustRoot, err
}

// SetUnidentifiedAccess publishes the unidentified-access key that admits
// sealed messages to this account (nil: none), or admits anyone.
func (c *Client) SetUnidentifiedAccess(ctx context.Context, key []byte, unrestricted bool) error {
	body := struct {
		Key          []byte `json:"unidentified_access_key"`
		Unrestricted bool   `json:"unrestricted"`
	}{key, unrestricted}
	_, err := c.do(ctx, "PUT", "/v1/accounts/me/unidentified-access", nil, body, nil)
	return err
}

// PushTarget is a device's push registration (PUT /v1/devices/me/push).
type PushTarget struct {
	Kind     string `json:"kind"`
	Token    string `json:"token,omitempty"`
	Topic    string `json:"topic,omitempty"`
	Sandbox  bool   `json:"sandbox,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	P256DH   []byte `json:"p256dh,omitempty"`
	Auth     []byte `json:"auth,omitempty"`
}

// SetPushTarget registers where this device is woken when it is offline.
func (c *Client) SetPushTarget(ctx context.Context, t PushTarget) error {
	_, err := c.do(ctx, "PUT", "/v1/devices/me/push", nil, t, nil)
	return err
}

// RemovePushTarget stops wake-ups of this device.
func (c *Client) RemovePushTarget(ctx context.Context) error {
	_, err := c.do(ctx, "DELETE", "/v1/devices/me/push", nil, nil, nil)
	return err
}
