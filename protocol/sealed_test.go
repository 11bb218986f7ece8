package protocol_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// operator is a trust root and a server key it certified.
type operator struct {
	root   protocol.KeyPair
	server protocol.KeyPair
	cert   *protocol.ServerCertificate
}

func newOperator(t testing.TB, keyID uint32) *operator {
	t.Helper()
	o := &operator{}
	var err error
	if o.root, err = protocol.GenerateKeyPair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if o.server, err = protocol.GenerateKeyPair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if o.cert, err = protocol.NewServerCertificate(rand.Reader, keyID, o.server.Public, o.root.Private); err != nil {
		t.Fatal(err)
	}
	return o
}

// senderCert certifies d's identity for a day.
func (o *operator) senderCert(t testing.TB, d *device, expires time.Time) *protocol.SenderCertificate {
	t.Helper()
	c, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: d.addr.Name, SenderE164: "+12025550100",
		SenderDevice: d.addr.DeviceID, Expires: expires, IdentityKey: d.identity.Public, Signer: o.cert}, o.server.Private)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pair sets up a session from a to b and b's answer, so both can send.
func pair(t *testing.T, a, b *device) {
	t.Helper()
	ctx := context.Background()
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, a.store, a.addr, b.addr, b.bundle(0, 0), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.decrypt(a.addr, a.encrypt(t, b.addr, "hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.decrypt(b.addr, b.encrypt(t, a.addr, "hi")); err != nil {
		t.Fatal(err)
	}
}

func TestSealedSenderRoundTrip(t *testing.T) {
	ctx := context.Background()
	op := newOperator(t, 7)
	alice, bob := newDevice(t, 1), newDevice(t, 2)
	pair(t, alice, bob)
	now := time.Now()
	cert := op.senderCert(t, alice, now.Add(24*time.Hour))

	parsed, err := protocol.ParseSenderCertificate(cert.Bytes())
	if err != nil || parsed.SenderUUID != alice.addr.Name || parsed.SenderDevice != 1 || parsed.SenderE164 != "+12025550100" ||
		!parsed.IdentityKey.Equal(alice.identity.Public) || parsed.Signer.KeyID != 7 || !parsed.Expires.Equal(cert.Expires) {
		t.Fatalf("parsed certificate %+v, %v", parsed, err)
	}
	if !parsed.Validate(op.root.Public, now) {
		t.Fatal("a fresh certificate does not validate")
	}

	body, err := protocol.SealedSenderEncrypt(ctx, rand.Reader, alice.store, bob.addr, cert, []byte("sealed hello"), now)
	if err != nil {
		t.Fatal(err)
	}
	if body[0] != 0x11 {
		t.Errorf("version byte %#x", body[0])
	}
	res, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, bob.store, body, op.root.Public, now, bob.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Plaintext) != "sealed hello" || res.Sender != alice.addr || res.SenderE164 != "+12025550100" {
		t.Fatalf("decrypted %+v", res)
	}
}

// Every certificate the recipient must not believe is refused, and the
// session is left as it was: the next good message still decrypts.
func TestSealedSenderForbidden(t *testing.T) {
	ctx := context.Background()
	op, other := newOperator(t, 7), newOperator(t, 8)
	alice, bob, mallory := newDevice(t, 1), newDevice(t, 2), newDevice(t, 3)
	pair(t, alice, bob)
	now := time.Now()
	seal := func(cert *protocol.SenderCertificate) []byte {
		t.Helper()
		b, err := protocol.SealedSenderEncrypt(ctx, rand.Reader, alice.store, bob.addr, cert, []byte("x"), now)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A certificate for Mallory's identity key on Alice's message: the
	// sealing used Alice's key, so the certificate does not match it.
	mallorysCert := op.senderCert(t, mallory, now.Add(time.Hour))
	for _, c := range []struct {
		name string
		body []byte
		want error
	}{
		{"expired", seal(op.senderCert(t, alice, now.Add(-time.Minute))), protocol.ErrSealedSender},
		{"another root", seal(other.senderCert(t, alice, now.Add(time.Hour))), protocol.ErrSealedSender},
		{"another identity", seal(mallorysCert), protocol.ErrSealedSender},
		{"empty", nil, protocol.ErrSealedSender},
		{"unknown version", []byte{0x55, 1, 2}, protocol.ErrSealedSender},
	} {
		if _, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, bob.store, c.body, op.root.Public, now, bob.addr, ""); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A byte flipped anywhere fails the MACs.
	good := seal(op.senderCert(t, alice, now.Add(time.Hour)))
	for i := 1; i < len(good); i += 7 {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0x40
		if _, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, bob.store, bad, op.root.Public, now, bob.addr, ""); err == nil {
			t.Fatalf("byte %d flipped: decrypted", i)
		}
	}
	// Our own device is refused (a server replaying our message to us).
	self := op.senderCert(t, alice, now.Add(time.Hour))
	if _, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, bob.store, seal(self), op.root.Public, now, alice.addr, ""); err == nil {
		t.Error("a message from our own address decrypted")
	}
	if res, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, bob.store, good, op.root.Public, now, bob.addr, ""); err != nil || string(res.Plaintext) != "x" {
		t.Fatalf("the good message after the refused ones: %v", err)
	}
	// A certificate that names Alice's account with Mallory's key, on
	// Alice's own ciphertext resealed by Mallory: the sealing and the
	// certificate agree, but the inner message is under Alice's identity.
	carol := newDevice(t, 4)
	pair(t, alice, carol)
	inner := alice.encrypt(t, carol.addr, "captured")
	forged, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: alice.addr.Name, SenderDevice: alice.addr.DeviceID,
		Expires: now.Add(time.Hour), IdentityKey: mallory.identity.Public, Signer: op.cert}, op.server.Private)
	if err != nil {
		t.Fatal(err)
	}
	u, err := protocol.NewUnidentifiedContent(inner, forged, protocol.HintDefault, nil)
	if err != nil {
		t.Fatal(err)
	}
	resealed, err := protocol.SealV1(rand.Reader, mallory.identity, carol.identity.Public, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, carol.store, resealed, op.root.Public, now, carol.addr, ""); !errors.Is(err, protocol.ErrSealedSender) {
		t.Errorf("a certificate whose key is not the session's: %v", err)
	}
	if got, err := carol.decrypt(alice.addr, inner); err != nil || string(got) != "captured" {
		t.Errorf("the session was changed by the refused message: %q %v", got, err)
	}
	// A revoked server certificate id never validates.
	revoked := newOperator(t, 0xDEADC357)
	if revoked.senderCert(t, alice, now.Add(time.Hour)).Validate(revoked.root.Public, now) {
		t.Error("a revoked server certificate validated")
	}
}

// sealedSeeds are valid sealed messages and certificates for the fuzzers.
func sealedSeeds(f *testing.F) (op *operator, bob *device, bodies [][]byte, cert *protocol.SenderCertificate) {
	ctx := context.Background()
	op = newOperator(f, 7)
	alice, b := newDevice(f, 1), newDevice(f, 2)
	if err := protocol.ProcessPreKeyBundle(ctx, rand.Reader, alice.store, alice.addr, b.addr, b.bundle(0, 0), time.Now()); err != nil {
		f.Fatal(err)
	}
	cert = op.senderCert(f, alice, time.Now().Add(time.Hour))
	for _, text := range []string{"", "one", "a longer sealed message"} {
		body, err := protocol.SealedSenderEncrypt(ctx, rand.Reader, alice.store, b.addr, cert, []byte(text), time.Now())
		if err != nil {
			f.Fatal(err)
		}
		bodies = append(bodies, body)
	}
	return op, b, bodies, cert
}

// FuzzUnseal: no input panics unsealing; what unseals has a certificate
// whose identity key is the one the sealing used.
func FuzzUnseal(f *testing.F) {
	_, bob, bodies, _ := sealedSeeds(f)
	for _, b := range bodies {
		f.Add(b)
	}
	f.Add([]byte{0x22})
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := protocol.Unseal(bob.identity, b)
		if err != nil {
			if !errors.Is(err, protocol.ErrSealedSender) && !errors.Is(err, protocol.ErrInvalidKey) {
				t.Fatalf("error outside the package's kinds: %v", err)
			}
			return
		}
		if u.Sender == nil || u.Sender.Signer == nil {
			t.Fatal("unsealed content without a certificate")
		}
	})
}

// FuzzParseSenderCertificate: no input panics; a parsed certificate
// serializes back to its input.
func FuzzParseSenderCertificate(f *testing.F) {
	_, _, _, cert := sealedSeeds(f)
	f.Add(cert.Bytes())
	f.Add(cert.Signer.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := protocol.ParseSenderCertificate(b)
		if err != nil {
			return
		}
		if string(c.Bytes()) != string(b) || c.SenderDevice == 0 || c.Signer == nil {
			t.Fatalf("parsed %+v", c)
		}
	})
}

// FuzzParseMultiRecipientMessage: no input panics; every recipient has
// devices with ids 1 to 127, and each received form starts with 0x22.
func FuzzParseMultiRecipientMessage(f *testing.F) {
	f.Add([]byte{0x23, 1, 0, 0x8e, 0x53, 0x6c, 0x21, 0x5b, 0x40, 0x4f, 0x06, 0x9f, 0x2d, 0xb4, 0x3c, 0x1e, 0x4f, 0x0b, 0x33,
		1, 0x01, 0x02})
	f.Add([]byte{0x22, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.ParseMultiRecipientMessage(b)
		if err != nil {
			if !errors.Is(err, protocol.ErrSealedSender) {
				t.Fatalf("error outside ErrSealedSender: %v", err)
			}
			return
		}
		for _, r := range m.Recipients {
			if len(r.Devices) == 0 {
				t.Fatal("recipient without devices")
			}
			for _, d := range r.Devices {
				if d.DeviceID < 1 || d.DeviceID > 127 || d.RegistrationID > 0x3FFF {
					t.Fatalf("device %+v", d)
				}
			}
			if rb := m.ReceivedBy(r); rb[0] != 0x22 || len(rb) < 1+48+32 {
				t.Fatalf("received form %x", rb)
			}
		}
	})
}
