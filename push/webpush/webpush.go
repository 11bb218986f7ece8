// Package webpush wakes devices through Web Push (RFC 8030), as
// UnifiedPush distributors and browsers' push services speak it: a tiny
// fixed payload encrypted to the client's key (RFC 8291, aes128gcm) and
// the relay identified by VAPID (RFC 8292). Endpoints are URLs the
// clients give, so the relay refuses to reach loopback, private and
// link-local addresses with them unless told to (tests, a push server on
// the same network).
package webpush

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	wp "github.com/SherClockHolmes/webpush-go"

	"github.com/parleyhq/parley/push"
)

// Payload is what every wake-up carries, encrypted: nothing about any
// message.
var Payload = []byte(`{"parley":"wake"}`)

// Keys is a VAPID key pair as parleyd keeps it in a file (mode 0600).
type Keys struct {
	PublicKey  string `json:"public_key"`  // base64url, 65-byte uncompressed P-256 point
	PrivateKey string `json:"private_key"` // base64url, 32 bytes
}

// GenerateKeys makes a VAPID key pair.
func GenerateKeys() (Keys, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return Keys{}, err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return Keys{PublicKey: enc(k.PublicKey().Bytes()), PrivateKey: enc(k.Bytes())}, nil
}

// LoadKeys reads and checks a VAPID key file.
func LoadKeys(path string) (Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Keys{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Keys{}, fmt.Errorf("%s is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Keys{}, err
	}
	var k Keys
	if err := json.Unmarshal(b, &k); err != nil {
		return Keys{}, fmt.Errorf("%s: %w", path, err)
	}
	priv, err1 := base64.RawURLEncoding.DecodeString(k.PrivateKey)
	pub, err2 := base64.RawURLEncoding.DecodeString(k.PublicKey)
	if err1 != nil || err2 != nil {
		return Keys{}, fmt.Errorf("%s: keys are not base64url", path)
	}
	sk, err := ecdh.P256().NewPrivateKey(priv)
	if err != nil || string(sk.PublicKey().Bytes()) != string(pub) {
		return Keys{}, fmt.Errorf("%s: the public key is not the private key's", path)
	}
	return k, nil
}

// Config configures a Sender.
type Config struct {
	Keys Keys
	// Subscriber is the relay operator's contact, a mailto: or https: URL,
	// sent in the VAPID token as push services require.
	Subscriber string
	// TTL is how long the push service keeps an undelivered wake-up.
	TTL time.Duration
	// AllowPrivate lets endpoints resolve to loopback, private and
	// link-local addresses.
	AllowPrivate bool
	// Client, if set, is used as is (tests); else a client with the
	// address guard is built.
	Client *http.Client
}

// Sender pushes through Web Push.
type Sender struct {
	cfg    Config
	client *http.Client
}

// New returns a Sender.
func New(cfg Config) (*Sender, error) {
	if !strings.HasPrefix(cfg.Subscriber, "mailto:") && !strings.HasPrefix(cfg.Subscriber, "https://") {
		return nil, errors.New("web push needs the operator's contact, a mailto: or https:// URL, for VAPID")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	c := cfg.Client
	if c == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		if !cfg.AllowPrivate {
			d.Control = refusePrivate
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = d.DialContext
		tr.Proxy = nil // a proxy would resolve the name itself, past the guard
		c = &http.Client{Timeout: 15 * time.Second, Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Sender{cfg: cfg, client: c}, nil
}

// refusePrivate stops a connection to an address a client-given endpoint
// must not reach (the relay's own network).
func refusePrivate(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("web push endpoint resolves to %s, a local or private address", host)
	}
	return nil
}

// Push implements push.Sender.
func (s *Sender) Push(ctx context.Context, t push.Target, urgent bool) error {
	if t.Kind != push.WebPush {
		return fmt.Errorf("web push sender given a %s target", t.Kind)
	}
	urgency := wp.UrgencyNormal
	if urgent {
		urgency = wp.UrgencyHigh
	}
	enc := base64.RawURLEncoding.EncodeToString
	resp, err := wp.SendNotificationWithContext(ctx, Payload, &wp.Subscription{Endpoint: t.Endpoint,
		Keys: wp.Keys{Auth: enc(t.Auth), P256dh: enc(t.P256DH)}}, &wp.Options{
		// The library adds "mailto:" to a subscriber that is not an https URL.
		HTTPClient: s.client, Subscriber: strings.TrimPrefix(s.cfg.Subscriber, "mailto:"), TTL: int(s.cfg.TTL.Seconds()), Urgency: urgency,
		VAPIDPublicKey: s.cfg.Keys.PublicKey, VAPIDPrivateKey: s.cfg.Keys.PrivateKey,
	})
	if err != nil {
		return fmt.Errorf("web push: %w", push.WithoutURL(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return push.ErrGone
	case resp.StatusCode == http.StatusTooManyRequests:
		after := time.Minute
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			after = time.Duration(secs) * time.Second
		}
		return &push.RetryError{After: after}
	}
	return fmt.Errorf("web push: the push service answered %d", resp.StatusCode)
}
