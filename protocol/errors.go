package protocol

import (
	"errors"
	"fmt"
)

// Errors the package returns; test for them with errors.Is.
var (
	// ErrInvalidMessage reports a message that cannot be parsed or fails its
	// MAC or decryption (a bad signature is ErrInvalidSignature).
	ErrInvalidMessage = errors.New("invalid message")
	// ErrLegacyMessage reports a message or stored session of a protocol
	// version this package no longer speaks (version 3, X3DH, or older), as
	// official libsignal refuses them.
	ErrLegacyMessage = errors.New("legacy message version")
	// ErrDuplicateMessage reports a message whose key was already used: a
	// redelivery. Callers usually drop it silently.
	ErrDuplicateMessage = errors.New("duplicate message")
	// ErrNoSession reports that there is no usable session with the address.
	ErrNoSession = errors.New("no session")
	// ErrInvalidSignature reports a prekey or message signature that does
	// not verify under the claimed identity or signing key.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrNoPreKey reports a prekey message naming a prekey we do not have
	// (already used, or never ours).
	ErrNoPreKey = errors.New("prekey not found")
	// ErrNoSenderKey reports a group message from a sender whose key for
	// that distribution (and chain) we do not have.
	ErrNoSenderKey = errors.New("no sender key")
	// ErrPreKeyReused reports a PreKey message that uses the last-resort
	// Kyber prekey with a signed prekey and base key seen before: a replay.
	// KyberPreKeyStore.MarkKyberPreKeyUsed returns it.
	ErrPreKeyReused = errors.New("last-resort prekey used again with the same base key")
	// ErrInvalidState reports a stored session or sender-key record that
	// cannot be used.
	ErrInvalidState = errors.New("invalid stored state")
)

// UntrustedIdentityError reports that the identity store refused an
// address's identity key; nothing was encrypted or decrypted.
type UntrustedIdentityError struct {
	Address Address
	Key     PublicKey
}

// Error names the address (identity keys are public, but not needed here).
func (e *UntrustedIdentityError) Error() string {
	return fmt.Sprintf("untrusted identity for %s", e.Address)
}
