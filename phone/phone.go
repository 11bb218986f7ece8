// Package phone parses, canonicalises and pseudonymises E.164 telephone numbers.
//
// Numbers arrive from untrusted clients, so parsing is strict: a leading '+',
// an assigned country calling code, and only ASCII digits with a small set of
// visual separators. Everything the relay stores about a number goes through
// Hasher, so that a database dump reveals no numbers.
package phone

import (
	"errors"
	"fmt"
	"strings"
)

// MaxInputLen bounds the raw text Parse accepts, separators included.
const MaxInputLen = 32

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid phone number")

// Number is a canonical E.164 number: '+' followed by 7 to 15 digits, the
// first of which start an assigned geographic country calling code.
// The zero Number is not valid; obtain one from Parse.
type Number struct {
	e164 string // "+" and digits
	cc   int    // length of the country calling code in digits
}

// Parse reads a telephone number in international format. It accepts ASCII
// spaces, hyphens, dots and parentheses between digits ("+1 (202) 555-0100")
// and rejects everything else: missing '+', "00" prefixes, letters, non-ASCII
// digits, unassigned or non-geographic calling codes, and lengths outside
// what E.164 allows. The result's String is canonical: Parse(n.String()) == n.
func Parse(s string) (Number, error) {
	if len(s) > MaxInputLen {
		return Number{}, fmt.Errorf("%w: longer than %d characters", ErrInvalid, MaxInputLen)
	}
	if !strings.HasPrefix(s, "+") {
		return Number{}, fmt.Errorf("%w: must start with '+' and the country calling code", ErrInvalid)
	}
	digits := make([]byte, 0, 15)
	prevSep := true // no separator directly after '+'
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits = append(digits, c)
			prevSep = false
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
			if prevSep && c != '(' {
				return Number{}, fmt.Errorf("%w: misplaced separator at offset %d", ErrInvalid, i)
			}
			prevSep = c != ')'
		default:
			return Number{}, fmt.Errorf("%w: unexpected character at offset %d", ErrInvalid, i)
		}
	}
	if len(digits) == 0 || prevSep {
		return Number{}, fmt.Errorf("%w: must end with a digit", ErrInvalid)
	}
	if len(digits) < 7 || len(digits) > 15 {
		return Number{}, fmt.Errorf("%w: %d digits, E.164 allows 7 to 15", ErrInvalid, len(digits))
	}
	if digits[0] == '0' {
		return Number{}, fmt.Errorf("%w: a country calling code never starts with 0", ErrInvalid)
	}
	cc := callingCodeLen(digits)
	if cc == 0 {
		return Number{}, fmt.Errorf("%w: unassigned or non-geographic country calling code", ErrInvalid)
	}
	national := digits[cc:]
	if len(national) < 4 {
		return Number{}, fmt.Errorf("%w: national number too short", ErrInvalid)
	}
	if cc == 1 && digits[0] == '1' {
		// North American Numbering Plan: NXX NXX XXXX.
		if len(national) != 10 || national[0] < '2' || national[3] < '2' {
			return Number{}, fmt.Errorf("%w: +1 numbers have 10 digits, area code and exchange not starting with 0 or 1", ErrInvalid)
		}
	}
	return Number{e164: "+" + string(digits), cc: cc}, nil
}

// String returns the canonical E.164 form, e.g. "+442079460000".
func (n Number) String() string { return n.e164 }

// IsZero reports whether n is the zero Number (never returned by Parse).
func (n Number) IsZero() bool { return n.e164 == "" }

// CallingCode returns the country calling code without '+', e.g. "44".
func (n Number) CallingCode() string { return n.e164[1 : 1+n.cc] }

// Prefix returns the calling code and the first k digits of the national
// number ("+44 7911" for k=4), used to group numbers for anti-pumping limits.
// k is clamped to the national number's length.
func (n Number) Prefix(k int) string {
	national := n.e164[1+n.cc:]
	k = max(0, min(k, len(national)))
	return "+" + n.CallingCode() + " " + national[:k]
}

// Masked returns a form safe for logs: the calling code and the last two
// digits, e.g. "+44*******00".
func (n Number) Masked() string {
	if n.IsZero() {
		return ""
	}
	rest := len(n.e164) - 1 - n.cc
	return "+" + n.CallingCode() + strings.Repeat("*", rest-2) + n.e164[len(n.e164)-2:]
}
