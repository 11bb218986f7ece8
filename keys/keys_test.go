package keys

import (
	"bytes"
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"go.mau.fi/libsignal/ecc"
)

// identity returns a fresh identity key pair as a test device would make it.
func identity(t testing.TB) (*ecc.ECKeyPair, ECPublicKey) {
	t.Helper()
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseECPublicKey(kp.PublicKey().Serialize())
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func signedPreKey(t testing.TB, id *ecc.ECKeyPair, keyID uint32) SignedPreKey {
	t.Helper()
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParseECPublicKey(kp.PublicKey().Serialize())
	return SignedPreKey{ID: keyID, PublicKey: pub, Signature: ecc.CalculateSignature(id.PrivateKey(), pub[:])}
}

func kemPreKey(t testing.TB, id *ecc.ECKeyPair, keyID uint32) KEMPreKey {
	t.Helper()
	b := make([]byte, KEMPublicKeySize)
	rand.Read(b)
	b[0] = kemTypeKyber1024
	return KEMPreKey{ID: keyID, PublicKey: b, Signature: ecc.CalculateSignature(id.PrivateKey(), b)}
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
	idPair, _ := ecc.GenerateKeyPair()
	msg := []byte("message")
	sig := ecc.CalculateSignature(idPair.PrivateKey(), msg)
	f.Add(idPair.PublicKey().Serialize(), msg, sig[:])
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

// Concurrent verification, as concurrent registrations do it: under -race
// this fails if libsignal's lazily initialised logger is not installed
// before use (see libsignal.go).
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
