package cli

import (
	"errors"
	"testing"
)

// FuzzEnvelope: whatever bytes arrive, checkEnvelope accepts them or
// rejects them with ErrBadEnvelope, and never panics.
func FuzzEnvelope(f *testing.F) {
	f.Add(byte(EnvelopeSignal), []byte{0x44, 0x0a, 0x21, 0x05})
	f.Add(byte(EnvelopePreKey), []byte{0x44, 0x28, 0x01})
	f.Add(byte(EnvelopePreKey), []byte{0x33, 0x28, 0x01})
	f.Add(byte(EnvelopeSenderKey), []byte{groupFrameVersion, 0x33, 0x0a, 0x10})
	f.Add(byte(EnvelopeSignal), []byte{})
	f.Fuzz(func(t *testing.T, typ byte, b []byte) {
		if err := checkEnvelope(int(typ%5), b); err != nil && !errors.Is(err, ErrBadEnvelope) {
			t.Fatalf("rejected without ErrBadEnvelope: %v", err)
		}
	})
}

func TestLegacyEnvelopesExplained(t *testing.T) {
	// A version-3 (X3DH) PreKeySignalMessage from a client that predates PQXDH.
	err := checkEnvelope(EnvelopePreKey, []byte{0x33, 0x08, 0x01})
	if !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("got %v", err)
	}
	if want := "predates PQXDH"; !contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
