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
	"net/netip"
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
		d := &net.Dialer{Timeout: 5 * time.Second}
		if !cfg.AllowPrivate {
			d.Control = refusePrivate
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = d.DialContext
		tr.Proxy = nil // a proxy would resolve the name itself, past the guard
		// Short: endpoints are client-given, and a slow one holds a
		// dispatcher worker (every service shares them).
		c = &http.Client{Timeout: 5 * time.Second, Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Sender{cfg: cfg, client: c}, nil
}

// refusePrivate stops a connection to an address a client-given endpoint
// must not reach: anything but the public internet (IANA's special-purpose
// ranges), with IPv4 inside IPv6 (mapped, NAT64) checked as IPv4.
func refusePrivate(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("web push endpoint resolves to %s, a local or private address", ap.Addr())
	}
	return nil
}

// nonPublic are the special-purpose ranges (RFC 6890 and IANA's registries)
// no push service lives in.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16",
		"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if nat64.Contains(a) { // the IPv4 address a NAT64 gateway would reach
		b := a.As16()
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return a.IsValid()
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
