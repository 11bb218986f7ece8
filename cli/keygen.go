package cli

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/protocol"
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
func newIdentity() (protocol.IdentityKeyPair, error) {
	return protocol.GenerateKeyPair(rand.Reader)
}

// identityFromPrivate rebuilds the identity key pair from its private key.
func identityFromPrivate(priv []byte) (protocol.IdentityKeyPair, error) {
	kp, err := protocol.KeyPairFromPrivate(priv)
	if err != nil {
		return protocol.IdentityKeyPair{}, fmt.Errorf("stored identity key: %w", err)
	}
	return kp, nil
}

// newRegistrationID returns a random id in 1..16380, the range the relay
// accepts.
func newRegistrationID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])%16380 + 1
}

// nextID returns the id after last, wrapping within 1..maxKeyID.
func nextID(last uint32) uint32 { return last%maxKeyID + 1 }

// newSignedPreKey generates, stores and returns the upload form of a signed
// prekey with id.
func newSignedPreKey(ctx context.Context, tx *clientdb.Tx, ik protocol.IdentityKeyPair, id uint32, now time.Time) (relayclient.SignedKey, error) {
	k, err := protocol.GenerateSignedPreKey(rand.Reader, ik, id, now)
	if err != nil {
		return relayclient.SignedKey{}, err
	}
	record := append(k.KeyPair.Private.Bytes(), k.Signature...)
	if err := tx.PutSignedPreKey(ctx, id, now.UnixMilli(), record); err != nil {
		return relayclient.SignedKey{}, err
	}
	return relayclient.SignedKey{KeyID: id, PublicKey: k.KeyPair.Public.Bytes(), Signature: k.Signature}, nil
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
		k, err := protocol.GeneratePreKey(rand.Reader, last)
		if err != nil {
			return nil, err
		}
		if err := tx.PutPreKey(ctx, last, k.KeyPair.Private.Bytes()); err != nil {
			return nil, err
		}
		out = append(out, relayclient.SignedKey{KeyID: last, PublicKey: k.KeyPair.Public.Bytes()})
	}
	return out, nil
}

// newKEMPreKeys generates and stores n Kyber1024 prekeys signed by the
// identity key (n = 1 and lastResort for the last-resort key): round-3
// Kyber with type byte 0x08, what official libsignal expects.
func newKEMPreKeys(ctx context.Context, tx *clientdb.Tx, ik protocol.IdentityKeyPair, n int, lastResort bool, now time.Time) ([]relayclient.SignedKey, error) {
	last, err := tx.MaxKeyID(ctx, "kem_prekeys")
	if err != nil {
		return nil, err
	}
	out := make([]relayclient.SignedKey, 0, n)
	for range n {
		last = nextID(last)
		k, err := protocol.GenerateKyberPreKey(rand.Reader, ik, last, now)
		if err != nil {
			return nil, err
		}
		if err := tx.PutKEMPreKey(ctx, last, lastResort, k.KeyPair.PrivateBytes()); err != nil {
			return nil, err
		}
		out = append(out, relayclient.SignedKey{KeyID: last, PublicKey: k.KeyPair.Public.Bytes(), Signature: k.Signature})
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
func newDeviceKeys(ctx context.Context, tx *clientdb.Tx, ik protocol.IdentityKeyPair, now time.Time) (deviceKeys, error) {
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
	lr, err := newKEMPreKeys(ctx, tx, ik, 1, true, now)
	if err != nil {
		return k, err
	}
	k.LastResort = lr[0]
	k.PQPreKeys, err = newKEMPreKeys(ctx, tx, ik, PreKeyBatch, false, now)
	return k, err
}
