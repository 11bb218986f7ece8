package cli

import (
	"errors"
	"fmt"

	"github.com/parleyhq/parley/protocol"
)

// Envelope types: libsignal's CiphertextMessage types, carried opaquely by
// the relay (and EnvelopeSenderKey, parley's framing of group messages).
const (
	EnvelopeSignal = 2 // SignalMessage: an established session
	EnvelopePreKey = 3 // PreKeySignalMessage: the first messages of a session
)

// ErrBadEnvelope reports ciphertext that is malformed before any
// cryptography, or of a protocol version parley no longer speaks.
var ErrBadEnvelope = errors.New("malformed envelope")

// maxEnvelope is the largest envelope content parley accepts.
const maxEnvelope = 256 << 10

// checkEnvelope parses an envelope's content with the protocol's strict
// parsers, so malformed input is refused as ErrBadEnvelope before any
// store is read.
func checkEnvelope(typ int, b []byte) error {
	if len(b) > maxEnvelope {
		return fmt.Errorf("%w: %d bytes", ErrBadEnvelope, len(b))
	}
	var err error
	switch typ {
	case EnvelopePreKey:
		_, err = protocol.ParsePreKeySignalMessage(b)
	case EnvelopeSignal:
		_, err = protocol.ParseSignalMessage(b)
	case EnvelopeSenderKey:
		_, err = parseGroupFrame(b)
		return err
	default:
		return fmt.Errorf("%w: unknown envelope type %d", ErrBadEnvelope, typ)
	}
	if errors.Is(err, protocol.ErrLegacyMessage) {
		return fmt.Errorf("%w: %w (the sender's client predates PQXDH and must be upgraded)", ErrBadEnvelope, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	return nil
}
