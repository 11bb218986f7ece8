package cli

import (
	"context"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/state/record"

	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/store/clientdb"
)

// Prekey housekeeping.
const (
	// PreKeyBatch is how many one-time prekeys are generated at a time
	// (the relay takes at most 100 per upload).
	PreKeyBatch = 100
	// SignedPreKeyRotation is how often the signed prekey is replaced.
	SignedPreKeyRotation = 7 * 24 * time.Hour
	// SignedPreKeyGrace is how long a replaced signed prekey is kept, so
	// sessions started from bundles fetched before the rotation still work.
	SignedPreKeyGrace = 30 * 24 * time.Hour
	maxKeyID          = 0xFFFFFF
)

// newIdentity generates an identity key pair.
func newIdentity() (*identity.KeyPair, error) {
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		return nil, err
	}
	return identity.NewKeyPair(identity.NewKey(kp.PublicKey()), kp.PrivateKey()), nil
}

// identityFromPrivate rebuilds the identity key pair from its private key.
func identityFromPrivate(priv []byte) (*identity.KeyPair, error) {
	if len(priv) != 32 {
		return nil, fmt.Errorf("stored identity key is %d bytes, want 32", len(priv))
	}
	kp := ecc.CreateKeyPair(priv)
	return identity.NewKeyPair(identity.NewKey(kp.PublicKey()), kp.PrivateKey()), nil
}

// newRegistrationID returns a random id in 1..16380, the range the relay
// accepts (keyhelper's generator ignores it: LIBSIGNAL-NOTES pitfall 8).
func newRegistrationID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])%16380 + 1
}

// nextID returns the id after last, wrapping within 1..maxKeyID.
func nextID(last uint32) uint32 { return last%maxKeyID + 1 }

// newSignedPreKey generates, stores and returns the upload form of a signed
// prekey with id.
func newSignedPreKey(ctx context.Context, tx *clientdb.Tx, ik *identity.KeyPair, id uint32, now time.Time) (relayclient.SignedKey, error) {
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		return relayclient.SignedKey{}, err
	}
	pub := kp.PublicKey().Serialize()
	sig := ecc.CalculateSignature(ik.PrivateKey(), pub)
	r := record.NewSignedPreKey(id, now.UnixMilli(), kp, sig, serializer.SignedPreKeyRecord)
	if err := tx.PutSignedPreKey(ctx, id, now.UnixMilli(), r.Serialize()); err != nil {
		return relayclient.SignedKey{}, err
	}
	return relayclient.SignedKey{KeyID: id, PublicKey: pub, Signature: sig[:]}, nil
}

// newPreKeys generates and stores n one-time prekeys with ids after the
// highest stored one.
func newPreKeys(ctx context.Context, tx *clientdb.Tx, n int) ([]relayclient.SignedKey, error) {
	last, err := tx.MaxKeyID(ctx, "prekeys")
	if err != nil {
		return nil, err
	}
	out := make([]relayclient.SignedKey, 0, n)
	for range n {
		last = nextID(last)
		kp, err := ecc.GenerateKeyPair()
		if err != nil {
			return nil, err
		}
		if err := tx.PutPreKey(ctx, last, record.NewPreKey(last, kp, serializer.PreKeyRecord).Serialize()); err != nil {
			return nil, err
		}
		out = append(out, relayclient.SignedKey{KeyID: last, PublicKey: kp.PublicKey().Serialize()})
	}
	return out, nil
}

// newKEMPreKeys generates and stores n ML-KEM-1024 prekeys signed by the
// identity key (n = 1 and lastResort for the last-resort key).
//
// go.mau.fi/libsignal has no PQXDH, so parley sessions do not use these
// yet; the relay requires them (Signal's current bundle format), and the
// decapsulation seeds are kept so a future client can.
func newKEMPreKeys(ctx context.Context, tx *clientdb.Tx, ik *identity.KeyPair, n int, lastResort bool) ([]relayclient.SignedKey, error) {
	last, err := tx.MaxKeyID(ctx, "kem_prekeys")
	if err != nil {
		return nil, err
	}
	out := make([]relayclient.SignedKey, 0, n)
	for range n {
		last = nextID(last)
		dk, err := mlkem.GenerateKey1024()
		if err != nil {
			return nil, err
		}
		pub := append([]byte{0x08}, dk.EncapsulationKey().Bytes()...) // Signal's Kyber1024 type byte
		sig := ecc.CalculateSignature(ik.PrivateKey(), pub)
		if err := tx.PutKEMPreKey(ctx, last, lastResort, dk.Bytes()); err != nil {
			return nil, err
		}
		out = append(out, relayclient.SignedKey{KeyID: last, PublicKey: pub, Signature: sig[:]})
	}
	return out, nil
}

// deviceKeys are the public keys a new device uploads.
type deviceKeys struct {
	SignedPreKey, LastResort relayclient.SignedKey
	PreKeys, PQPreKeys       []relayclient.SignedKey
}

// newDeviceKeys generates (and stores in tx) a new device's signed prekey,
// one-time EC and PQ prekeys and PQ last-resort prekey, signed by ik.
func newDeviceKeys(ctx context.Context, tx *clientdb.Tx, ik *identity.KeyPair, now time.Time) (deviceKeys, error) {
	var k deviceKeys
	lastSigned, err := tx.MaxKeyID(ctx, "signed_prekeys")
	if err != nil {
		return k, err
	}
	if k.SignedPreKey, err = newSignedPreKey(ctx, tx, ik, nextID(lastSigned), now); err != nil {
		return k, err
	}
	if k.PreKeys, err = newPreKeys(ctx, tx, PreKeyBatch); err != nil {
		return k, err
	}
	lr, err := newKEMPreKeys(ctx, tx, ik, 1, true)
	if err != nil {
		return k, err
	}
	k.LastResort = lr[0]
	k.PQPreKeys, err = newKEMPreKeys(ctx, tx, ik, PreKeyBatch, false)
	return k, err
}
