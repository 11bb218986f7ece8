package protocol_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/libsignalpeer"
	"github.com/parleyhq/parley/protocol"
)

// Certificates made by either side validate on the other, and the other's
// parse sees the same fields.
func TestInteropSealedSenderCertificates(t *testing.T) {
	peer := libsignalpeer.Start(t)
	now := time.Now()
	g := newDevice(t, 3)
	// Ours, checked by official libsignal.
	op := newOperator(t, 42)
	ours := op.senderCert(t, g, now.Add(time.Hour))
	info, err := peer.ValidateSenderCertificate(ours.Bytes(), op.root.Public.Bytes(), uint64(now.UnixMilli()))
	if err != nil || !info.Valid || info.SenderUUID != g.addr.Name || info.SenderE164 != "+12025550100" || info.SenderDeviceID != 3 ||
		info.ServerKeyID != 42 || !bytes.Equal(info.Key, g.identity.Public.Bytes()) || info.Expiration != uint64(ours.Expires.UnixMilli()) {
		t.Fatalf("official on our certificate: %+v, %v", info, err)
	}
	if info, err := peer.ValidateSenderCertificate(ours.Bytes(), newOperator(t, 1).root.Public.Bytes(), uint64(now.UnixMilli())); err != nil || info.Valid {
		t.Errorf("official validated our certificate under another root: %+v %v", info, err)
	}
	// Official's, checked by us.
	root, err := peer.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	server, err := peer.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := peer.NewServerCertificate(9, server.PublicKey, root.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	exp := now.Add(2 * time.Hour).UnixMilli()
	theirs, err := peer.NewSenderCertificate(libsignalpeer.SenderCertificateInput{SenderUUID: g.addr.Name, SenderDeviceID: 3,
		SenderKey: g.identity.Public.Bytes(), Expiration: uint64(exp), ServerCertificate: serverCert, ServerPrivate: server.PrivateKey})
	if err != nil {
		t.Fatal(err)
	}
	c, err := protocol.ParseSenderCertificate(theirs)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, _ := protocol.ParsePublicKey(root.PublicKey)
	if c.SenderUUID != g.addr.Name || c.SenderE164 != "" || c.SenderDevice != 3 || c.Expires.UnixMilli() != exp ||
		!c.IdentityKey.Equal(g.identity.Public) || c.Signer.KeyID != 9 || !c.Validate(rootKey, now) {
		t.Fatalf("our parse of official's certificate: %+v", c)
	}
	if c.Validate(rootKey, time.UnixMilli(exp+1)) || c.Validate(op.root.Public, now) {
		t.Error("official's certificate validated after expiry or under another root")
	}
}

// Sealed one-to-one messages both ways, each side validating the other's
// certificate chain against the operator's root.
func TestInteropSealedSender(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()
	now := time.Now()
	op := newOperator(t, 5)
	g := newDevice(t, 1)
	o := newOfficial(t, peer, 2)
	officialStarts(t, o, g, 0, 0)

	// Official → Go, with a certificate we issued for the official client.
	oKey, _ := protocol.ParsePublicKey(o.keys.IdentityKey)
	oCert, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: o.addr.Name,
		SenderDevice: o.addr.DeviceID, Expires: now.Add(time.Hour), IdentityKey: oKey, Signer: op.cert}, op.server.Private)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // a PreKey message, then whisper messages after the answer
		text := []byte("sealed from official " + string(rune('a'+i)))
		body, err := peer.SealedEncrypt(o.client, la(g.addr), oCert.Bytes(), text)
		if err != nil {
			t.Fatal(err)
		}
		res, err := protocol.SealedSenderDecrypt(ctx, rand.Reader, g.store, body, op.root.Public, now, g.addr, "")
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(res.Plaintext, text) || res.Sender != o.addr {
			t.Fatalf("message %d: %+v", i, res)
		}
		// Go → official, sealed with our certificate for the Go device.
		reply := []byte("sealed reply " + string(rune('a'+i)))
		gBody, err := protocol.SealedSenderEncrypt(ctx, rand.Reader, g.store, o.addr, op.senderCert(t, g, now.Add(time.Hour)), reply, now)
		if err != nil {
			t.Fatal(err)
		}
		got, err := peer.SealedDecrypt(o.client, libsignalpeer.SealedDecryptInput{Body: gBody, TrustRoot: op.root.Public.Bytes(),
			Timestamp: uint64(now.UnixMilli()), LocalUUID: o.addr.Name, LocalDeviceID: o.addr.DeviceID})
		if err != nil {
			t.Fatalf("official sealed decrypt %d: %v", i, err)
		}
		if !bytes.Equal(got.Plaintext, reply) || got.SenderUUID != g.addr.Name || got.DeviceID != g.addr.DeviceID || got.SenderE164 != "+12025550100" {
			t.Fatalf("official decrypted %+v", got)
		}
	}
	// Official refuses our certificate after expiry or under another root.
	expired, err := protocol.SealedSenderEncrypt(ctx, rand.Reader, g.store, o.addr, op.senderCert(t, g, now.Add(-time.Second)), []byte("late"), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peer.SealedDecrypt(o.client, libsignalpeer.SealedDecryptInput{Body: expired, TrustRoot: op.root.Public.Bytes(),
		Timestamp: uint64(now.UnixMilli()), LocalUUID: o.addr.Name, LocalDeviceID: o.addr.DeviceID}); err == nil {
		t.Error("official accepted an expired certificate of ours")
	}
}

// An official sealed sender v2 group message: our parse of the sent form
// routes exactly as official libsignal's server-side parse does, the
// received form we build is byte for byte official's, and our recipients
// unseal it and decrypt the group message inside.
func TestInteropSealedSenderMultiRecipient(t *testing.T) {
	peer := libsignalpeer.Start(t)
	ctx := context.Background()
	now := time.Now()
	op := newOperator(t, 5)
	o := newOfficial(t, peer, 1)
	members := []*device{newDevice(t, 1), newDevice(t, 2)}
	dist := uuid.New()
	skdm := parseOfficialDistribution(t, o.distribution(t, dist))
	var recipients []libsignalpeer.Address
	for _, g := range members {
		officialStarts(t, o, g, 0, 0)
		if err := protocol.ProcessSenderKeyDistributionMessage(ctx, g.store, o.addr, skdm); err != nil {
			t.Fatal(err)
		}
		recipients = append(recipients, la(g.addr))
	}
	oKey, _ := protocol.ParsePublicKey(o.keys.IdentityKey)
	oCert, err := protocol.NewSenderCertificate(rand.Reader, protocol.SenderCertificate{SenderUUID: o.addr.Name,
		SenderDevice: o.addr.DeviceID, Expires: now.Add(time.Hour), IdentityKey: oKey, Signer: op.cert}, op.server.Private)
	if err != nil {
		t.Fatal(err)
	}
	excluded := uuid.NewString()
	groupID := []byte("group-id-bytes")
	body, err := peer.MultiRecipientEncrypt(o.client, libsignalpeer.MultiRecipientInput{Recipients: recipients, Excluded: []string{excluded},
		SenderCertificate: oCert.Bytes(), DistributionID: dist.String(), Plaintext: []byte("to everyone, sealed"),
		ContentHint: libsignalpeer.ContentHintResendable, GroupID: groupID})
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.MultiRecipientParse(body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.ParseMultiRecipientMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Excluded, want.Excluded) || len(got.Recipients) != len(want.Recipients) {
		t.Fatalf("recipients %+v excluded %v, official %+v", got.Recipients, got.Excluded, want)
	}
	for i, r := range got.Recipients {
		w := want.Recipients[i]
		if r.ServiceID != w.ServiceID || len(r.Devices) != len(w.Devices) {
			t.Fatalf("recipient %d: %+v, official %+v", i, r, w)
		}
		for j, d := range r.Devices {
			if d.DeviceID != w.Devices[j].DeviceID || d.RegistrationID != w.Devices[j].RegistrationID {
				t.Errorf("recipient %d device %d: %+v, official %+v", i, j, d, w.Devices[j])
			}
		}
		received := got.ReceivedBy(r)
		if !bytes.Equal(received, w.Message) {
			t.Fatalf("recipient %d: our received form differs from official's", i)
		}
		g := members[i]
		u, err := protocol.Unseal(g.identity, received)
		if err != nil {
			t.Fatalf("member %d unseal: %v", i, err)
		}
		if u.Type != protocol.TypeSenderKey || !bytes.Equal(u.GroupID, groupID) || u.ContentHint != protocol.HintResendable ||
			!u.Sender.Validate(op.root.Public, now) || u.Sender.SenderUUID != o.addr.Name {
			t.Fatalf("member %d unsealed %+v", i, u)
		}
		plain, err := protocol.GroupDecrypt(ctx, g.store, o.addr, u.Contents)
		if err != nil || string(plain) != "to everyone, sealed" {
			t.Fatalf("member %d group decrypt: %q %v", i, plain, err)
		}
	}
	// Another recipient's C and AT do not open a member's message.
	crossed := got.ReceivedBy(got.Recipients[1])
	if _, err := protocol.Unseal(members[0].identity, crossed); err == nil {
		t.Error("a member unsealed the form meant for another")
	}
}

// The unidentified-access key we derive from a profile key is official
// zkgroup's.
func TestInteropDeriveAccessKey(t *testing.T) {
	peer := libsignalpeer.Start(t)
	for range 5 {
		pk := make([]byte, protocol.ProfileKeySize)
		rand.Read(pk)
		want, err := peer.DeriveAccessKey(pk)
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.DeriveAccessKey(pk)
		if err != nil || !bytes.Equal(got, want) || len(got) != 16 {
			t.Fatalf("access key %x, official %x (%v)", got, want, err)
		}
	}
	if _, err := protocol.DeriveAccessKey(make([]byte, 31)); err == nil {
		t.Error("a 31-byte profile key was accepted")
	}
}
