// Package twilio sends verification codes through Twilio: Verify v2 (Twilio
// generates and checks the code) or Programmable SMS (the relay generates the
// code and Twilio only delivers the text).
package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"
	verifyapi "github.com/twilio/twilio-go/rest/verify/v2"

	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/verify"
)

// Config holds Twilio credentials and where codes come from.
type Config struct {
	AccountSID string
	AuthToken  string
	// VerifyServiceSID selects Twilio Verify (VA…).
	VerifyServiceSID string
	// From or MessagingServiceSID selects Programmable SMS.
	From, MessagingServiceSID string
	// BaseURL, if set, sends every API request there instead of
	// *.twilio.com (a local server that speaks Twilio's API, for tests).
	// The original host travels in the X-Twilio-Host header.
	BaseURL string
	// Timeout bounds each API call (twilio-go takes no context); default 10s.
	Timeout time.Duration
}

func newClient(c Config) (*client.Client, error) {
	if c.AccountSID == "" || c.AuthToken == "" {
		return nil, errors.New("twilio: account SID and auth token are required")
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	hc := &http.Client{
		Timeout: timeout,
		// Twilio's own default: do not follow redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if c.BaseURL != "" {
		base, err := url.Parse(c.BaseURL)
		if err != nil || base.Host == "" {
			return nil, fmt.Errorf("twilio: bad base URL %q", c.BaseURL)
		}
		hc.Transport = redirect{base: base, next: http.DefaultTransport}
	}
	cl := &client.Client{Credentials: client.NewCredentials(c.AccountSID, c.AuthToken), HTTPClient: hc}
	cl.SetAccountSid(c.AccountSID)
	return cl, nil
}

// redirect points requests for *.twilio.com at a local server.
type redirect struct {
	base *url.URL
	next http.RoundTripper
}

func (r redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("X-Twilio-Host", req.URL.Host)
	req.URL.Scheme, req.URL.Host = r.base.Scheme, r.base.Host
	req.Host = r.base.Host
	return r.next.RoundTrip(req)
}

// Verify is a verify.Provider backed by Twilio Verify.
type Verify struct {
	svc     *verifyapi.ApiService
	service string
}

// NewVerify returns a Provider using the Verify service c.VerifyServiceSID.
func NewVerify(c Config) (*Verify, error) {
	if c.VerifyServiceSID == "" {
		return nil, errors.New("twilio: Verify service SID is required")
	}
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	return &Verify{svc: verifyapi.NewApiServiceWithClient(cl), service: c.VerifyServiceSID}, nil
}

// StartVerification asks Twilio to text a code to n.
func (v *Verify) StartVerification(ctx context.Context, n phone.Number) (string, error) {
	p := (&verifyapi.CreateVerificationParams{}).SetTo(n.String()).SetChannel("sms")
	res, err := call(ctx, func() (*verifyapi.VerifyV2Verification, error) { return v.svc.CreateVerification(v.service, p) })
	if err != nil {
		return "", mapError(err)
	}
	if res.Sid == nil || *res.Sid == "" || len(*res.Sid) > 64 {
		return "", fmt.Errorf("%w: Twilio Verify answered without a usable verification SID", verify.ErrProvider)
	}
	return *res.Sid, nil
}

// CheckVerification asks Twilio whether code is right.
func (v *Verify) CheckVerification(ctx context.Context, ref, code string) (bool, error) {
	p := (&verifyapi.CreateVerificationCheckParams{}).SetVerificationSid(ref).SetCode(code)
	res, err := call(ctx, func() (*verifyapi.VerifyV2VerificationCheck, error) {
		return v.svc.CreateVerificationCheck(v.service, p)
	})
	if err != nil {
		return false, mapError(err)
	}
	return res.Status != nil && *res.Status == "approved", nil
}

// SMS is a verify.CodeSender backed by Twilio Programmable SMS.
type SMS struct {
	svc                *api.ApiService
	from, messagingSvc string
}

// NewSMS returns a CodeSender sending from c.From or c.MessagingServiceSID.
func NewSMS(c Config) (*SMS, error) {
	if (c.From == "") == (c.MessagingServiceSID == "") {
		return nil, errors.New("twilio: exactly one of From and MessagingServiceSID is required")
	}
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	return &SMS{svc: api.NewApiServiceWithClient(cl), from: c.From, messagingSvc: c.MessagingServiceSID}, nil
}

// SendCode texts code to n.
func (s *SMS) SendCode(ctx context.Context, n phone.Number, code string) error {
	p := (&api.CreateMessageParams{}).SetTo(n.String()).
		SetBody("Your Parley verification code: " + code + "\nDo not share it with anyone.")
	if s.from != "" {
		p.SetFrom(s.from)
	} else {
		p.SetMessagingServiceSid(s.messagingSvc)
	}
	if _, err := call(ctx, func() (*api.ApiV2010Message, error) { return s.svc.CreateMessage(p) }); err != nil {
		return mapError(err)
	}
	return nil
}

// call runs a context-less twilio-go call, giving up early if ctx ends (the
// HTTP client's timeout bounds the abandoned call).
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Twilio error codes the relay tells apart.
const (
	codeNotFound         = 20404 // verification expired, approved, or unknown
	codeTooManyRequests  = 20429
	codeInvalidParameter = 60200
	codeMaxChecks        = 60202
	codeMaxSends         = 60203
	codeInvalidTo        = 21211
	codeNotMobile        = 21614
	codeRegionBlocked    = 21408
	codeUnsubscribed     = 21610
)

// mapError turns Twilio's answers into verify's errors. Twilio's message is
// kept in the wrapped error for the log, never sent to clients.
func mapError(err error) error {
	var te *client.TwilioRestError
	if !errors.As(err, &te) {
		return fmt.Errorf("%w: %w", verify.ErrProvider, err)
	}
	switch te.Code {
	case codeMaxChecks:
		return verify.ErrNoAttemptsLeft
	case codeNotFound:
		return verify.ErrCodeExpired
	case codeMaxSends:
		return &ratelimit.Error{RetryAfter: 10 * time.Minute}
	case codeTooManyRequests:
		return &ratelimit.Error{RetryAfter: time.Minute}
	case codeInvalidParameter, codeInvalidTo, codeNotMobile, codeRegionBlocked, codeUnsubscribed:
		return fmt.Errorf("%w (Twilio error %d)", verify.ErrUndeliverable, te.Code)
	}
	return fmt.Errorf("%w: Twilio error %d (HTTP %d): %s", verify.ErrProvider, te.Code, te.Status, te.Message)
}
