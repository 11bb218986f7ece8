package keys

import (
	"bytes"
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/libsignalpeer"
	"github.com/parleyhq/parley/protocol"
)

// identity returns a fresh identity key pair as a test device would make it.
func identity(t testing.TB) (protocol.KeyPair, ECPublicKey) {
	t.Helper()
	kp, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseECPublicKey(kp.Public.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func sign(t testing.TB, id protocol.KeyPair, msg []byte) Signature {
	t.Helper()
	sig, err := id.Private.Sign(rand.Reader, msg)
	if err != nil {
		t.Fatal(err)
	}
	return Signature(sig)
}

func signedPreKey(t testing.TB, id protocol.KeyPair, keyID uint32) SignedPreKey {
	t.Helper()
	kp, err := protocol.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParseECPublicKey(kp.Public.Bytes())
	return SignedPreKey{ID: keyID, PublicKey: pub, Signature: sign(t, id, pub[:])}
}

func kemPreKey(t testing.TB, id protocol.KeyPair, keyID uint32) KEMPreKey {
	t.Helper()
	kp, err := protocol.GenerateKEMKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := kp.Public.Bytes()
	return KEMPreKey{ID: keyID, PublicKey: b, Signature: sign(t, id, b)}
}

// TestOfficialKeys: the keys official libsignal generates (identity,
// signed EC prekey, one-time and last-resort Kyber1024 prekeys of type
// 0x08) parse and verify exactly as the relay receives them, and a
// signature over a changed key does not.
func TestOfficialKeys(t *testing.T) {
	peer := libsignalpeer.Start(t)
	if _, err := peer.NewClient("mobile", 77, 1); err != nil {
		t.Fatal(err)
	}
	k, err := peer.GenerateKeys("mobile", 3)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseECPublicKey(k.IdentityKey)
	if err != nil {
		t.Fatal(err)
	}
	spk, err := ParseECPublicKey(k.SignedPreKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kem := func(sk libsignalpeer.SignedKey) KEMPreKey {
		t.Helper()
		pub, err := ParseKEMPublicKey(sk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := ParseSignature(sk.Signature)
		if err != nil {
			t.Fatal(err)
		}
		return KEMPreKey{ID: sk.ID, PublicKey: pub, Signature: sig}
	}
	sig, err := ParseSignature(k.SignedPreKey.Signature)
	if err != nil {
		t.Fatal(err)
	}
	up := Upload{SignedPreKey: &SignedPreKey{ID: k.SignedPreKey.ID, PublicKey: spk, Signature: sig}}
	lr := kem(k.LastResortKyberPreKey)
	up.LastResort = &lr
	for _, pk := range k.KyberPreKeys {
		up.KEMPreKeys = append(up.KEMPreKeys, kem(pk))
	}
	for _, pk := range k.PreKeys {
		pub, err := ParseECPublicKey(pk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		up.PreKeys = append(up.PreKeys, PreKey{ID: pk.ID, PublicKey: pub})
	}
	if err := up.Validate(id); err != nil {
		t.Fatalf("official keys refused: %v", err)
	}
	bad := kem(k.KyberPreKeys[0])
	bad.PublicKey = append(KEMPublicKey(nil), bad.PublicKey...)
	bad.PublicKey[100] ^= 1
	if err := bad.Verify(id); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed Kyber key: err = %v, want ErrBadSignature", err)
	}
}

func TestParseECPublicKey(t *testing.T) {
	good := append([]byte{5}, bytes.Repeat([]byte{9}, 32)...)
	if _, err := ParseECPublicKey(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty": nil, "short": good[:32], "long": append(good, 0),
		"raw32": good[1:], "wrong type": append([]byte{6}, good[1:]...),
	} {
		if _, err := ParseECPublicKey(b); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: err = %v, want ErrBadKey", name, err)
		}
	}
	if _, err := ParseKEMPublicKey(make([]byte, KEMPublicKeySize)); !errors.Is(err, ErrBadKey) {
		t.Errorf("KEM key with type 0: err = %v", err)
	}
	if _, err := ParseSignature(make([]byte, 63)); !errors.Is(err, ErrBadKey) {
		t.Errorf("63-byte signature: err = %v", err)
	}
}

func TestSignatures(t *testing.T) {
	idPair, id := identity(t)
	_, other := identity(t)
	spk := signedPreKey(t, idPair, 7)
	if err := spk.Verify(id); err != nil {
		t.Fatalf("genuine signed prekey: %v", err)
	}
	if err := spk.Verify(other); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed by another identity: err = %v", err)
	}
	tampered := spk
	tampered.PublicKey[5] ^= 1
	if err := tampered.Verify(id); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered key: err = %v", err)
	}
	spk.ID = 0
	if err := spk.Verify(id); !errors.Is(err, ErrBadKeyID) {
		t.Errorf("key id 0: err = %v", err)
	}
	kem := kemPreKey(t, idPair, 1)
	if err := kem.Verify(id); err != nil {
		t.Fatalf("genuine kyber prekey: %v", err)
	}
	kem.Signature[0] ^= 1
	if err := kem.Verify(id); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered kyber signature: err = %v", err)
	}
}

func TestUploadValidate(t *testing.T) {
	idPair, id := identity(t)
	spk := signedPreKey(t, idPair, 1)
	ok := Upload{SignedPreKey: &spk, PreKeys: []PreKey{{ID: 1}, {ID: 2}}, KEMPreKeys: []KEMPreKey{kemPreKey(t, idPair, 1)}}
	if err := ok.Validate(id); err != nil {
		t.Fatal(err)
	}
	dup := Upload{PreKeys: []PreKey{{ID: 3}, {ID: 3}}}
	if err := dup.Validate(id); !errors.Is(err, ErrDuplicateID) {
		t.Errorf("repeated id: err = %v", err)
	}
	many := Upload{PreKeys: make([]PreKey, MaxPreKeysPerUpload+1)}
	if err := many.Validate(id); !errors.Is(err, ErrTooMany) {
		t.Errorf("101 prekeys: err = %v", err)
	}
}

// FuzzVerify feeds arbitrary identity keys, messages and signatures through
// parsing and verification: nothing may panic, and garbage never verifies.
func FuzzVerify(f *testing.F) {
	idPair, _ := protocol.GenerateKeyPair(rand.Reader)
	msg := []byte("message")
	sig, _ := idPair.Private.Sign(rand.Reader, msg)
	f.Add(idPair.Public.Bytes(), msg, sig)
	f.Add([]byte{5}, []byte{}, make([]byte, 64))
	f.Add(append([]byte{5}, bytes.Repeat([]byte{0xff}, 32)...), msg, bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, idb, msg, sigb []byte) {
		id, err := ParseECPublicKey(idb)
		if err != nil {
			return
		}
		s, err := ParseSignature(sigb)
		if err != nil {
			return
		}
		_ = verify(id, msg, s)
	})
}

// Concurrent verification, as concurrent registrations do it (go.mau.fi's
// libsignal, used before, raced on a lazily initialised global logger).
func TestConcurrentVerify(t *testing.T) {
	idPair, id := identity(t)
	spk := signedPreKey(t, idPair, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := spk.Verify(id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
