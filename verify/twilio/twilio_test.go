package twilio_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/verify"
	"github.com/parleyhq/parley/verify/twilio"
	"github.com/parleyhq/parley/verify/twilio/twiliotest"
)

const (
	sid   = "AC00000000000000000000000000000001"
	token = "0123456789abcdef0123456789abcdef"
	vsid  = "VA00000000000000000000000000000001"
)

func fake(t *testing.T) *twiliotest.Server {
	s := twiliotest.New(sid, token)
	t.Cleanup(s.Close)
	return s
}

func number(t *testing.T, s string) phone.Number {
	n, err := phone.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestVerifyFlow(t *testing.T) {
	srv := fake(t)
	v, err := twilio.NewVerify(twilio.Config{AccountSID: sid, AuthToken: token, VerifyServiceSID: vsid, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := number(t, "+442079460001")
	ref, err := v.StartVerification(ctx, n)
	if err != nil || !strings.HasPrefix(ref, "VE") {
		t.Fatalf("StartVerification = %q, %v", ref, err)
	}
	code := srv.LastCode(n.String())
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if ok, err := v.CheckVerification(ctx, ref, wrong); ok || err != nil {
		t.Fatalf("wrong code: ok=%v err=%v", ok, err)
	}
	if ok, err := v.CheckVerification(ctx, ref, code); !ok || err != nil {
		t.Fatalf("right code: ok=%v err=%v", ok, err)
	}
	// Twilio answers 20404 for a verification already approved.
	if _, err := v.CheckVerification(ctx, ref, code); !errors.Is(err, verify.ErrCodeExpired) {
		t.Errorf("re-check after approval: err = %v, want ErrCodeExpired", err)
	}
}

func TestVerifyErrors(t *testing.T) {
	srv := fake(t)
	v, _ := twilio.NewVerify(twilio.Config{AccountSID: sid, AuthToken: token, VerifyServiceSID: vsid, BaseURL: srv.URL})
	ctx := context.Background()
	n := number(t, "+442079460002")
	ref, err := v.StartVerification(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	code := srv.LastCode(n.String())
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	for range 5 {
		if _, err := v.CheckVerification(ctx, ref, wrong); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.CheckVerification(ctx, ref, code); !errors.Is(err, verify.ErrNoAttemptsLeft) {
		t.Errorf("sixth check: err = %v, want ErrNoAttemptsLeft (Twilio 60202)", err)
	}
	for range 4 { // five sends in ten minutes are allowed, counting the first
		if _, err := v.StartVerification(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	var rl *ratelimit.Error
	if _, err := v.StartVerification(ctx, n); !errors.As(err, &rl) {
		t.Errorf("sixth send: err = %v, want rate limited (Twilio 60203)", err)
	}
	srv.Throttle(true)
	if _, err := v.StartVerification(ctx, number(t, "+442079460003")); !errors.As(err, &rl) {
		t.Errorf("throttled: err = %v, want rate limited (Twilio 20429)", err)
	}
	srv.Throttle(false)
	bad, _ := twilio.NewVerify(twilio.Config{AccountSID: sid, AuthToken: "wrong" + token[5:], VerifyServiceSID: vsid, BaseURL: srv.URL})
	if _, err := bad.StartVerification(ctx, n); !errors.Is(err, verify.ErrProvider) {
		t.Errorf("bad credentials: err = %v, want ErrProvider", err)
	}
}

func TestSMS(t *testing.T) {
	srv := fake(t)
	s, err := twilio.NewSMS(twilio.Config{AccountSID: sid, AuthToken: token, From: "+15005550006", BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	n := number(t, "+4930901820")
	if err := s.SendCode(context.Background(), n, "123456"); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || msgs[0].To != n.String() || msgs[0].From != "+15005550006" || !strings.Contains(msgs[0].Body, "123456") {
		t.Errorf("messages = %+v", msgs)
	}
	if _, err := twilio.NewSMS(twilio.Config{AccountSID: sid, AuthToken: token, BaseURL: srv.URL}); err == nil {
		t.Error("SMS sender without From or MessagingServiceSID accepted")
	}
}
