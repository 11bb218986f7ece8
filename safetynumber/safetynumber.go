// Package safetynumber computes Signal's safety numbers: the 60-digit
// numeric fingerprint two people compare (read aloud or side by side) to
// confirm that no one sits between their identity keys.
//
// It follows the published description of Signal's NumericFingerprintGenerator
// (version prefix 0, 5200 iterations of SHA-512): each party's
// half is 30 digits derived from its identity key and stable identifier (here
// the E.164 number), and the two halves are ordered so both sides see the
// same string. Official libsignal's Fingerprint gives the same numbers
// (checked against it in cmd/parley's interoperability tests).
package safetynumber

import (
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Iterations is Signal's iteration count for displayable fingerprints.
const Iterations = 5200

// Digits is the length of a safety number.
const Digits = 60

// version is the fingerprint hash version prefix (two bytes, big-endian 0).
var version = []byte{0, 0}

// ErrMalformed reports a string that is not a 60-digit safety number.
var ErrMalformed = errors.New("a safety number is 60 digits")

// half returns one party's 30 digits.
func half(identityKey []byte, stableID string) string {
	sum := append(append(append([]byte(nil), version...), identityKey...), stableID...)
	h := sha512.New()
	for range Iterations {
		h.Reset()
		h.Write(sum)
		h.Write(identityKey)
		sum = h.Sum(sum[:0])
	}
	var b strings.Builder
	for off := 0; off < 30; off += 5 {
		var n uint64
		for _, c := range sum[off : off+5] {
			n = n<<8 | uint64(c)
		}
		fmt.Fprintf(&b, "%05d", n%100000)
	}
	return b.String()
}

// Compute returns the safety number between a local and a remote party,
// each given by its serialised identity public key (33 bytes, 0x05 prefix)
// and its stable identifier. Both parties compute the same string.
func Compute(localKey []byte, localID string, remoteKey []byte, remoteID string) string {
	l, r := half(localKey, localID), half(remoteKey, remoteID)
	if l < r {
		return l + r
	}
	return r + l
}

// Normalize strips the spaces people type between groups and checks that
// what remains is 60 digits.
func Normalize(s string) (string, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '-' {
			return -1
		}
		return r
	}, s)
	if len(s) != Digits || strings.Trim(s, "0123456789") != "" {
		return "", ErrMalformed
	}
	return s, nil
}

// Equal compares two normalised safety numbers in constant time.
func Equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Format groups a safety number in twelve blocks of five digits, as Signal
// shows it.
func Format(n string) string {
	var b strings.Builder
	for i := 0; i < len(n); i += 5 {
		if i > 0 {
			if i == 30 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(n[i:min(i+5, len(n))])
	}
	return b.String()
}
