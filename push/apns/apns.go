// Package apns wakes iOS apps through Apple's Push Notification service:
// HTTP/2 with token (JWT, ES256 from the team's .p8 key) authentication,
// a background push (content-available, no alert, priority 5 as Apple
// requires for background pushes) that carries nothing about any message.
package apns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/parleyhq/parley/push"
)

// Payload is every wake-up's body: "content available", nothing else.
var Payload = []byte(`{"aps":{"content-available":1}}`)

// Config configures a Sender.
type Config struct {
	// KeyFile is the team's APNs authentication key (.p8, PKCS#8 PEM);
	// KeyID its key id and TeamID the team's id.
	KeyFile, KeyID, TeamID string
	// URL, if set, replaces Apple's production and development hosts
	// (tests); RootCAs, if set, are the certificates its TLS is checked
	// against.
	URL     string
	RootCAs *x509.CertPool
	// Expiry is how long APNs keeps a wake-up for a device that is off.
	Expiry time.Duration
}

// Sender pushes through APNs.
type Sender struct {
	production, development *apns2.Client
	expiry                  time.Duration
}

// New reads the key and returns a Sender.
func New(cfg Config) (*Sender, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("APNs needs the key id and team id")
	}
	key, err := token.AuthKeyFromFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("APNs key %s: %w", cfg.KeyFile, err)
	}
	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	client := func(host string) *apns2.Client {
		c := apns2.NewTokenClient(tok)
		c.Host = host
		if cfg.URL != "" {
			c.Host = cfg.URL
		}
		if cfg.RootCAs != nil {
			c.HTTPClient = &http.Client{Timeout: apns2.HTTPClientTimeout,
				Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
					ForceAttemptHTTP2: true, HTTP2: &http.HTTP2Config{SendPingTimeout: apns2.ReadIdleTimeout}}}
		}
		return c
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = 24 * time.Hour
	}
	return &Sender{production: client(apns2.HostProduction), development: client(apns2.HostDevelopment), expiry: cfg.Expiry}, nil
}

// Push implements push.Sender. APNs takes background pushes at priority 5
// only, so urgency cannot be expressed; the push is sent at once.
func (s *Sender) Push(ctx context.Context, t push.Target, _ bool) error {
	if t.Kind != push.APNs {
		return fmt.Errorf("APNs sender given a %s target", t.Kind)
	}
	c := s.production
	if t.Sandbox {
		c = s.development
	}
	res, err := c.PushWithContext(ctx, &apns2.Notification{
		DeviceToken: t.Token, Topic: t.Topic, PushType: apns2.PushTypeBackground, Priority: apns2.PriorityLow,
		CollapseID: "parley-wake", Expiration: time.Now().Add(s.expiry), Payload: Payload,
	})
	if err != nil {
		return fmt.Errorf("APNs: %w", push.WithoutURL(err)) // the URL holds the device token
	}
	switch {
	case res.StatusCode == http.StatusOK:
		return nil
	case res.StatusCode == http.StatusGone || res.Reason == apns2.ReasonBadDeviceToken || res.Reason == apns2.ReasonDeviceTokenNotForTopic:
		return push.ErrGone
	case res.StatusCode == http.StatusTooManyRequests:
		return &push.RetryError{After: time.Minute}
	}
	return fmt.Errorf("APNs answered %d %s", res.StatusCode, res.Reason)
}
