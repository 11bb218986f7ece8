package api_test

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/sealedsender"
)

func newTrustRoot(t testing.TB) *sealedsender.TrustRoot {
	t.Helper()
	r, err := sealedsender.GenerateTrustRoot(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newIssuer(t testing.TB, root *sealedsender.TrustRoot, keyID uint32) *sealedsender.Issuer {
	t.Helper()
	k, err := root.NewServerKey(rand.Reader, keyID)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := sealedsender.NewIssuer(k, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func withoutSealedSender(c *envConfig) { c.sealed = nil }

// certificate fetches and parses c's sender certificate.
func (e *env) certificate(c *creds) (*protocol.SenderCertificate, time.Time) {
	e.t.Helper()
	r := e.call("GET", "/v1/certificate/delivery", c, nil, true)
	if r.Status != 200 {
		e.t.Fatalf("certificate: %d %s", r.Status, r.Raw)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(r.Body["certificate"].(string))
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := protocol.ParseSenderCertificate(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return cert, time.UnixMilli(int64(r.Body["expires"].(float64)))
}

// TestSenderCertificate: every device of an account gets a certificate
// naming it, its account and the account's identity key, without a number,
// that validates under the operator's trust root for the configured
// lifetime; the trust-root endpoint names that root.
func TestSenderCertificate(t *testing.T) {
	root := newTrustRoot(t)
	iss := newIssuer(t, root, 42)
	e := newEnv(t, func(c *envConfig) { c.sealed = iss })
	aliceDev, alice := e.register(aliceNumber, 1)

	before := time.Now()
	cert, expires := e.certificate(alice)
	after := time.Now()
	if cert.SenderUUID != alice.Account || cert.SenderDevice != 1 || cert.SenderE164 != "" ||
		!cert.IdentityKey.Equal(aliceDev.identity.Public) || cert.Signer.KeyID != 42 {
		t.Errorf("certificate names %s.%d (number %q), key %v, signer %d", cert.SenderUUID, cert.SenderDevice, cert.SenderE164, cert.IdentityKey, cert.Signer.KeyID)
	}
	if !expires.Equal(cert.Expires) || expires.Before(before.Add(2*time.Hour).Truncate(time.Millisecond)) || expires.After(after.Add(2*time.Hour)) {
		t.Errorf("expires %v (certificate %v), want 2h after %v", expires, cert.Expires, before)
	}
	if !cert.Validate(root.Public(), after) {
		t.Error("certificate does not validate under the trust root")
	}
	if cert.Validate(root.Public(), expires.Add(time.Millisecond)) {
		t.Error("certificate validates after it expires")
	}

	// A linked device gets its own, with the account's identity key.
	code := e.linkCode(alice).Body["code"].(string)
	body, cred := linkBody(t, aliceDev, alice.Account, code)
	if r := e.call("POST", "/v1/devices/link", nil, body, true); r.Status != 200 {
		t.Fatalf("link: %d %s", r.Status, r.Raw)
	}
	linked, _ := e.certificate(&creds{Account: alice.Account, Device: 2, Secret: cred})
	if linked.SenderUUID != alice.Account || linked.SenderDevice != 2 || !linked.IdentityKey.Equal(aliceDev.identity.Public) ||
		!linked.Validate(root.Public(), time.Now()) {
		t.Errorf("linked device's certificate: %s.%d key %v", linked.SenderUUID, linked.SenderDevice, linked.IdentityKey)
	}

	r := e.call("GET", "/v1/certificate/trust-root", nil, nil, true)
	if r.Status != 200 || r.Body["trust_root"] != base64.StdEncoding.EncodeToString(root.Public().Bytes()) || r.Body["key_id"] != 42.0 {
		t.Errorf("trust root: %d %s", r.Status, r.Raw)
	}
	for _, c := range []*creds{nil, {Account: alice.Account, Device: 1, Secret: "wrong-wrong-wrong-wrong-wrong-wrong-wrong"}} {
		if r := e.call("GET", "/v1/certificate/delivery", c, nil, true); r.Status != 401 || r.errCode() != "unauthorized" {
			t.Errorf("certificate with credentials %v: %d %s", c, r.Status, r.Raw)
		}
	}
}

// TestSealedSenderDisabled: a relay without a sender certificate file says
// so on both endpoints (after authentication, for the device's).
func TestSealedSenderDisabled(t *testing.T) {
	e := newEnv(t, withoutSealedSender)
	_, alice := e.register(aliceNumber, 0)
	for _, c := range []*creds{alice, nil} {
		path := "/v1/certificate/delivery"
		if c == nil {
			path = "/v1/certificate/trust-root"
		}
		if r := e.call("GET", path, c, nil, true); r.Status != 404 || r.errCode() != "sealed_sender_disabled" {
			t.Errorf("%s: %d %s", path, r.Status, r.Raw)
		}
	}
	if r := e.call("GET", "/v1/certificate/delivery", nil, nil, true); r.Status != 401 {
		t.Errorf("unauthenticated certificate request: %d %s", r.Status, r.Raw)
	}
}
