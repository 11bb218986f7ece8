package cli

import (
	"errors"
	"testing"

	"go.mau.fi/libsignal/protocol"
)

// FuzzEnvelope: whatever bytes arrive, the checks either reject them with
// ErrBadEnvelope or the library parses them without panicking.
func FuzzEnvelope(f *testing.F) {
	f.Add(byte(EnvelopeSignal), []byte{0x33, 0x0a, 0x21, 0x05})
	f.Add(byte(EnvelopePreKey), []byte{0x33, 0x28, 0x01})
	f.Add(byte(EnvelopeSignal), []byte{})
	f.Fuzz(func(t *testing.T, typ byte, b []byte) {
		var err error
		if typ%2 == 0 {
			if err = checkSignalMessage(b); err == nil {
				protocol.NewSignalMessageFromBytes(b, serializer.SignalMessage) // must not panic; errors are fine
				return
			}
		} else if err = checkPreKeyMessage(b); err == nil {
			protocol.NewPreKeySignalMessageFromBytes(b, serializer.PreKeySignalMessage, serializer.SignalMessage)
			return
		}
		if !errors.Is(err, ErrBadEnvelope) {
			t.Fatalf("rejected without ErrBadEnvelope: %v", err)
		}
	})
}
