// Package push wakes mobile devices that have envelopes waiting and no
// live socket: a phone cannot keep its WebSocket open in the background,
// so the relay asks Apple's (APNs), Google's (FCM) or a UnifiedPush / Web
// Push server to wake the app, which then connects and drains its queue.
// A push carries nothing about the message: no sender, no content, no
// conversation, only "you have mail".
//
// A Dispatcher decides when: some time after envelopes were stored for a
// device (a connected device drains them first), if they are still
// undelivered, at most once per device per interval across every replica
// (the database decides which replica pushes), never for a device with a
// live socket on this node. Pushes leave from a bounded queue, so a
// provider outage never slows sends; tokens the provider reports gone are
// deleted; rate-limit answers back the device off.
package push

import (
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// Kind names a push service.
type Kind string

// The push services.
const (
	APNs    Kind = "apns"    // Apple Push Notification service
	FCM     Kind = "fcm"     // Firebase Cloud Messaging (HTTP v1)
	WebPush Kind = "webpush" // Web Push (RFC 8030/8291/8292), as UnifiedPush distributors speak it
)

// Target is where one device is woken.
type Target struct {
	Kind Kind `json:"kind"`
	// Token is the APNs device token (hex) or the FCM registration token.
	Token string `json:"token,omitempty"`
	// Topic is the APNs topic (the app's bundle id); Sandbox selects
	// APNs's development environment.
	Topic   string `json:"topic,omitempty"`
	Sandbox bool   `json:"sandbox,omitempty"`
	// Endpoint is the Web Push endpoint (an https URL); P256DH (65 bytes,
	// uncompressed P-256 point) and Auth (16 bytes) are the client's keys
	// the payload is encrypted to (RFC 8291).
	Endpoint string `json:"endpoint,omitempty"`
	P256DH   []byte `json:"p256dh,omitempty"`
	Auth     []byte `json:"auth,omitempty"`
}

// ErrInvalidTarget reports a malformed push registration.
var ErrInvalidTarget = errors.New("invalid push target")

var (
	apnsToken = regexp.MustCompile(`^[0-9a-fA-F]{64,200}$`)
	fcmToken  = regexp.MustCompile(`^[A-Za-z0-9_:\-.]+$`)
	apnsTopic = regexp.MustCompile(`^[A-Za-z0-9.\-]{1,255}$`)
)

// Validate checks t's shape: one service, its fields and nothing else.
func (t Target) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidTarget, fmt.Sprintf(format, args...))
	}
	switch t.Kind {
	case APNs:
		if !apnsToken.MatchString(t.Token) || !apnsTopic.MatchString(t.Topic) {
			return bad("an APNs target is a hex device token and the app's topic")
		}
		if t.Endpoint != "" || t.P256DH != nil || t.Auth != nil {
			return bad("an APNs target has no Web Push fields")
		}
	case FCM:
		if len(t.Token) < 20 || len(t.Token) > 4096 || !fcmToken.MatchString(t.Token) {
			return bad("an FCM target is a registration token")
		}
		if t.Topic != "" || t.Sandbox || t.Endpoint != "" || t.P256DH != nil || t.Auth != nil {
			return bad("an FCM target has only a token")
		}
	case WebPush:
		u, err := url.Parse(t.Endpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(t.Endpoint) > 2048 {
			return bad("a Web Push endpoint is an https URL of at most 2048 bytes")
		}
		if len(t.P256DH) != 65 || t.P256DH[0] != 4 || len(t.Auth) != 16 {
			return bad("a Web Push target has the client's P-256 key (65 bytes) and auth secret (16 bytes)")
		}
		if _, err := ecdh.P256().NewPublicKey(t.P256DH); err != nil {
			return bad("the Web Push key is not a point on P-256")
		}
		if t.Token != "" || t.Topic != "" || t.Sandbox {
			return bad("a Web Push target has no token or topic")
		}
	default:
		return bad("kind is apns, fcm or webpush")
	}
	if b, _ := json.Marshal(t); len(b) > MaxTargetBytes {
		return bad("a target is at most %d bytes stored", MaxTargetBytes)
	}
	return nil
}

// MaxTargetBytes bounds a target as stored (JSON).
const MaxTargetBytes = 4096

// ErrGone reports a target the push service says no longer exists (an
// uninstalled app, an expired token or subscription): it is deleted.
var ErrGone = errors.New("push target gone")

// RetryError reports that the push service wants no more pushes to the
// target (or from us) for a while.
type RetryError struct {
	After time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("push service asked to retry after %v", e.After)
}

// WithoutURL strips the request URL from a transport error, so logs do
// not carry device tokens or Web Push endpoints (which let anyone push).
func WithoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Sender delivers one wake-up to a target of its kind. Urgent pushes wake
// the device at once; others may wait for a convenient moment.
type Sender interface {
	Push(ctx context.Context, t Target, urgent bool) error
}
