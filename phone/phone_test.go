package phone

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	valid := []struct{ in, want, cc string }{
		{"+442079460000", "+442079460000", "44"},
		{"+1 (202) 555-0100", "+12025550100", "1"},
		{"+49 30 901820", "+4930901820", "49"},
		{"+353.1.234.5678", "+35312345678", "353"},
		{"+6834002", "+6834002", "683"},
		{"+79161234567", "+79161234567", "7"},
		{"+861012345678901", "+861012345678901", "86"},
	}
	for _, tc := range valid {
		n, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if n.String() != tc.want || n.CallingCode() != tc.cc {
			t.Errorf("Parse(%q) = %s cc %s, want %s cc %s", tc.in, n, n.CallingCode(), tc.want, tc.cc)
		}
	}
	invalid := []string{
		"", "+", "442079460000", "0044 20 7946 0000", "+0442079460000",
		"+44 20 7946 000a", "+44  2079460000", "+ 442079460000", "+442079460000 ",
		"+44-", "+1234567890123456", "+123456", "+8001234567", "+2102345678",
		"+1 202 555 010", "+1 102 555 0100", "+1 202 155 0100",
		"+44２07946000０", "+44\x002079460000", "+44\n2079460000",
		"+44" + strings.Repeat("1", 40),
	}
	for _, in := range invalid {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %s, want error", in, n)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", in, err)
		}
	}
}

func TestPrefixAndMasked(t *testing.T) {
	n, err := Parse("+44 7911 123456")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Prefix(4); got != "+44 7911" {
		t.Errorf("Prefix(4) = %q", got)
	}
	if got := n.Prefix(99); got != "+44 7911123456" {
		t.Errorf("Prefix(99) = %q", got)
	}
	if got := n.Masked(); got != "+44********56" {
		t.Errorf("Masked = %q", got)
	}
	if strings.Contains(n.Masked(), "7911") {
		t.Error("Masked reveals the number")
	}
}

func TestCallingCodesArePrefixFree(t *testing.T) {
	for a := range geographic {
		for b := range geographic {
			if a != b && strings.HasPrefix(b, a) {
				t.Errorf("calling code %s is a prefix of %s", a, b)
			}
		}
	}
}

func TestHasher(t *testing.T) {
	if _, err := NewHasher(make([]byte, 16)); err == nil {
		t.Error("short key accepted")
	}
	h1, _ := NewHasher(bytes.Repeat([]byte{1}, 32))
	h2, _ := NewHasher(bytes.Repeat([]byte{2}, 32))
	a, _ := Parse("+442079460000")
	b, _ := Parse("+44 20 7946 0000")
	c, _ := Parse("+442079460001")
	if h1.Hash(a) != h1.Hash(b) {
		t.Error("equal numbers hash differently")
	}
	if h1.Hash(a) == h1.Hash(c) || h1.Hash(a) == h2.Hash(a) {
		t.Error("hash does not depend on number and key")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"+442079460000", "+1 (202) 555-0100", "+", "", "+44..1", "+(1)2025550100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(n.String())
		if err != nil || again != n {
			t.Fatalf("canonical form %q of %q does not round-trip: %v", n, s, err)
		}
		if len(n.String()) > 16 || !strings.HasPrefix(n.String(), "+"+n.CallingCode()) {
			t.Fatalf("bad canonical form %q", n)
		}
		_ = n.Masked()
		_ = n.Prefix(3)
	})
}
