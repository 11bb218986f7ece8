package safetynumber

import (
	"encoding/hex"
	"testing"
)

// Signal's published test vector (libsignal's fingerprint tests: the same
// keys, stable identifiers and expected number appear in its Rust, Java and
// C test suites).
var (
	aliceKey, _ = hex.DecodeString("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
	bobKey, _   = hex.DecodeString("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
)

const (
	aliceID = "+14152222222"
	bobID   = "+14153333333"
	want    = "300354477692869396892869876765458257569162576843440918079131"
)

func TestSignalVector(t *testing.T) {
	if got := Compute(aliceKey, aliceID, bobKey, bobID); got != want {
		t.Errorf("alice's view: %s, want %s", got, want)
	}
	if got := Compute(bobKey, bobID, aliceKey, aliceID); got != want {
		t.Errorf("bob's view: %s, want %s", got, want)
	}
}

func TestChanges(t *testing.T) {
	other := append([]byte(nil), bobKey...)
	other[10] ^= 1
	if Compute(aliceKey, aliceID, other, bobID) == want {
		t.Error("a different key gives the same number")
	}
	if Compute(aliceKey, aliceID, bobKey, "+14153333334") == want {
		t.Error("a different identifier gives the same number")
	}
}

func TestNormalize(t *testing.T) {
	f := Format(want)
	if f != "30035 44776 92869 39689 28698 76765\n45825 75691 62576 84344 09180 79131" {
		t.Errorf("Format: %q", f)
	}
	for _, in := range []string{want, f, "30035-44776-92869-39689-28698-76765 45825 75691 62576 84344 09180 79131"} {
		got, err := Normalize(in)
		if err != nil || !Equal(got, want) {
			t.Errorf("Normalize(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", want[:59], want + "1", "a" + want[1:], "３" + want[1:]} {
		if _, err := Normalize(in); err == nil {
			t.Errorf("Normalize(%q) accepted", in)
		}
	}
}
