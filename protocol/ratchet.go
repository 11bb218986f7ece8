package protocol

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
)

// Limits of the Double Ratchet, the same as official libsignal's.
const (
	// MaxForwardJumps is how far ahead of a chain a message may be.
	MaxForwardJumps = 25000
	// MaxMessageKeys is how many skipped message keys a chain keeps.
	MaxMessageKeys = 2000
	// maxReceiverChains is how many receiving chains a session keeps.
	maxReceiverChains = 5
	// maxArchivedStates is how many earlier sessions a record keeps.
	maxArchivedStates = 40
)

// chainKey is a symmetric-ratchet chain: its key and the index of the next
// message key it gives.
type chainKey struct {
	key   [32]byte
	index uint32
}

func hmacSHA256(key []byte, data ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// messageSeed is the input to this step's message keys.
func (c chainKey) messageSeed() []byte { return hmacSHA256(c.key[:], []byte{0x01}) }

// next is the chain one step on.
func (c chainKey) next() chainKey {
	var n chainKey
	copy(n.key[:], hmacSHA256(c.key[:], []byte{0x02}))
	n.index = c.index + 1
	return n
}

// messageKeys encrypt and authenticate one message.
type messageKeys struct {
	cipherKey []byte // 32
	macKey    []byte // 32
	iv        []byte // 16
}

// deriveMessageKeys expands a message seed, salted with the post-quantum
// ratchet's key for this message when there is one.
func deriveMessageKeys(seed, pqrKey []byte) (messageKeys, error) {
	okm, err := hkdf.Key(sha256.New, seed, pqrKey, "WhisperMessageKeys", 80)
	if err != nil {
		return messageKeys{}, fmt.Errorf("derive message keys: %w", err)
	}
	return messageKeys{cipherKey: okm[:32], macKey: okm[32:64], iv: okm[64:80]}, nil
}

// createChain performs one Diffie-Hellman ratchet step from a root key:
// the new root key and the first key of a new chain.
func createChain(root [32]byte, theirs PublicKey, ours PrivateKey) ([32]byte, chainKey, error) {
	shared, err := ours.Agree(theirs)
	if err != nil {
		return [32]byte{}, chainKey{}, err
	}
	okm, err := hkdf.Key(sha256.New, shared, root[:], "WhisperRatchet", 64)
	if err != nil {
		return [32]byte{}, chainKey{}, err
	}
	var newRoot [32]byte
	var ck chainKey
	copy(newRoot[:], okm[:32])
	copy(ck.key[:], okm[32:])
	return newRoot, ck, nil
}
