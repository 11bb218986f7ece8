package spqr

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// KDF labels and inputs (crate: src/authenticator.rs, src/chain.rs,
// src/v1/unchunked/send_ct.rs, send_ek.rs).
const (
	labelAuthUpdate = "Signal_PQCKA_V1_MLKEM768:Authenticator Update"
	labelMACCt      = "Signal_PQCKA_V1_MLKEM768:ciphertext"
	labelMACHdr     = "Signal_PQCKA_V1_MLKEM768:ekheader"
	labelSCKAKey    = "Signal_PQCKA_V1_MLKEM768:SCKA Key"
	labelChainStart = "Signal PQ Ratchet V1 Chain  Start" // two spaces, as in the crate
	labelChainAdd   = "Signal PQ Ratchet V1 Chain Add Epoch"
	labelChainNext  = "Signal PQ Ratchet V1 Chain Next"
	macSize         = 32
)

var zeroSalt = make([]byte, 32)

// kdf is HKDF-SHA256(salt, ikm, info) producing n bytes.
func kdf(salt, ikm []byte, info string, n int) []byte {
	out, err := hkdf.Key(sha256.New, ikm, salt, info, n)
	if err != nil {
		panic("spqr: hkdf: " + err.Error()) // only for n > 255*32
	}
	return out
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// authenticator MACs the KEM header and ciphertext of every epoch, keyed
// by a chain of secrets that absorbs each epoch's shared secret.
type authenticator struct {
	rootKey []byte
	macKey  []byte
}

func newAuthenticator(rootKey []byte, epoch uint64) *authenticator {
	a := &authenticator{rootKey: make([]byte, 32), macKey: make([]byte, 32)}
	a.update(epoch, rootKey)
	return a
}

func (a *authenticator) update(epoch uint64, k []byte) {
	ikm := append(append([]byte{}, a.rootKey...), k...)
	out := kdf(zeroSalt, ikm, labelAuthUpdate+string(be64(epoch)), 64)
	a.rootKey, a.macKey = out[:32], out[32:]
}

func (a *authenticator) mac(label string, epoch uint64, data []byte) []byte {
	m := hmac.New(sha256.New, a.macKey)
	m.Write([]byte(label))
	m.Write(be64(epoch))
	m.Write(data)
	return m.Sum(nil)
}

func (a *authenticator) macCt(epoch uint64, ct []byte) []byte { return a.mac(labelMACCt, epoch, ct) }
func (a *authenticator) macHdr(epoch uint64, hdr []byte) []byte {
	return a.mac(labelMACHdr, epoch, hdr)
}

func (a *authenticator) verifyCt(epoch uint64, ct, mac []byte) error {
	if !hmac.Equal(a.macCt(epoch, ct), mac) {
		return ErrMACVerifyFailed
	}
	return nil
}

func (a *authenticator) verifyHdr(epoch uint64, hdr, mac []byte) error {
	if !hmac.Equal(a.macHdr(epoch, hdr), mac) {
		return ErrMACVerifyFailed
	}
	return nil
}

// scka key: HKDF(0^32, ss, "…SCKA Key" ‖ BE64(epoch)), 32 bytes.
func sckaKey(ss []byte, epoch uint64) []byte {
	return kdf(zeroSalt, ss, labelSCKAKey+string(be64(epoch)), 32)
}
