package cli

import (
	"errors"
	"fmt"

	"go.mau.fi/libsignal/serialize"
	"google.golang.org/protobuf/proto"
)

// Envelope types: libsignal's CiphertextMessage types, carried opaquely by
// the relay.
const (
	EnvelopeSignal = 2 // SignalMessage: an established session
	EnvelopePreKey = 3 // PreKeySignalMessage: the first messages of a session
)

// ErrBadEnvelope reports ciphertext that is malformed before any
// cryptography: it is rejected without reaching the library's parsers,
// some of which panic on hostile input (LIBSIGNAL-NOTES pitfall 5).
var ErrBadEnvelope = errors.New("malformed envelope")

const (
	macSize      = 8
	maxEnvelope  = 256 << 10
	ecKeySize    = 33
	ecKeyType    = 0x05
	versionShift = 4
)

func checkECKey(name string, b []byte) error {
	if len(b) != ecKeySize || b[0] != ecKeyType {
		return fmt.Errorf("%w: %s is %d bytes, want %d with type 0x05", ErrBadEnvelope, name, len(b), ecKeySize)
	}
	return nil
}

func checkVersion(b byte) error {
	if b>>versionShift != 3 {
		return fmt.Errorf("%w: message version %d, want 3", ErrBadEnvelope, b>>versionShift)
	}
	return nil
}

// checkSignalMessage validates a serialised SignalMessage: version byte,
// protobuf, 8-byte MAC.
func checkSignalMessage(b []byte) error {
	if len(b) < 1+macSize+1 || len(b) > maxEnvelope {
		return fmt.Errorf("%w: signal message of %d bytes", ErrBadEnvelope, len(b))
	}
	if err := checkVersion(b[0]); err != nil {
		return err
	}
	var m serialize.SignalMessage
	if err := proto.Unmarshal(b[1:len(b)-macSize], &m); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if m.Counter == nil || len(m.Ciphertext) == 0 {
		return fmt.Errorf("%w: signal message without counter or ciphertext", ErrBadEnvelope)
	}
	return checkECKey("ratchet key", m.RatchetKey)
}

// checkPreKeyMessage validates a serialised PreKeySignalMessage and the
// SignalMessage inside it.
func checkPreKeyMessage(b []byte) error {
	if len(b) < 2 || len(b) > maxEnvelope {
		return fmt.Errorf("%w: prekey message of %d bytes", ErrBadEnvelope, len(b))
	}
	if err := checkVersion(b[0]); err != nil {
		return err
	}
	var m serialize.PreKeySignalMessage
	if err := proto.Unmarshal(b[1:], &m); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if m.SignedPreKeyId == nil || m.RegistrationId == nil {
		return fmt.Errorf("%w: prekey message without signed prekey or registration id", ErrBadEnvelope)
	}
	if err := checkECKey("base key", m.BaseKey); err != nil {
		return err
	}
	if err := checkECKey("identity key", m.IdentityKey); err != nil {
		return err
	}
	return checkSignalMessage(m.Message)
}
