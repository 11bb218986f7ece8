package spqr

import (
	"bytes"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha3"
	"math/rand/v2"
	"testing"
)

func testRand(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return rand.NewChaCha8(s)
}

// TestIncrementalMLKEMMatchesStdlib proves the split encapsulation: for many
// random keys and randomness, encaps1(header) + encaps2(ek part) gives
// exactly crypto/mlkem/mlkemtest's deterministic encapsulation, and
// crypto/mlkem decapsulates ct1‖ct2 to the same shared secret.
func TestIncrementalMLKEMMatchesStdlib(t *testing.T) {
	r := testRand(1)
	n := 60
	if testing.Short() {
		n = 10
	}
	for i := 0; i < n; i++ {
		keys, err := mlkemGenerate(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys.hdr) != headerSize || len(keys.ek) != ekSize || len(keys.dk) != dkSeedSize {
			t.Fatalf("sizes %d %d %d", len(keys.hdr), len(keys.ek), len(keys.dk))
		}
		if !ekMatchesHeader(keys.ek, keys.hdr) {
			t.Fatal("ek does not match its own header")
		}
		m := make([]byte, 32)
		r.Read(m)
		ct1, es, ss := mlkemEncaps1(keys.hdr, m)
		ct2 := mlkemEncaps2(es, keys.ek)
		if len(ct1) != 960 || len(ct2) != 128 || len(ss) != 32 {
			t.Fatalf("sizes ct1=%d ct2=%d ss=%d", len(ct1), len(ct2), len(ss))
		}
		ct := append(append([]byte{}, ct1...), ct2...)

		dk, err := mlkem.NewDecapsulationKey768(keys.dk)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dk.Decapsulate(ct)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ss) {
			t.Fatalf("key %d: crypto/mlkem decapsulates to a different secret", i)
		}
		wantSS, wantCT, err := mlkemtest.Encapsulate768(dk.EncapsulationKey(), m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(wantCT, ct) || !bytes.Equal(wantSS, ss) {
			t.Fatalf("key %d: split encapsulation differs from mlkemtest.Encapsulate768", i)
		}
		got2, err := mlkemDecaps(keys.dk, ct1, ct2)
		if err != nil || !bytes.Equal(got2, ss) {
			t.Fatalf("mlkemDecaps: %v", err)
		}
	}
}

func TestEkMatchesHeaderRejects(t *testing.T) {
	r := testRand(2)
	keys, _ := mlkemGenerate(r)
	other, _ := mlkemGenerate(r)
	if ekMatchesHeader(other.ek, keys.hdr) {
		t.Fatal("foreign ek accepted")
	}
	bad := append([]byte{}, keys.ek...)
	bad[0] ^= 1
	if ekMatchesHeader(bad, keys.hdr) {
		t.Fatal("modified ek accepted")
	}
	// A coefficient >= q with a header that hashes it correctly must still
	// be refused (FIPS 203 modulus check, as libcrux validate_pk_bytes).
	bad = append([]byte{}, keys.ek...)
	bad[0], bad[1] = 0xff, bad[1]|0x0f // first coefficient = 0xfff
	full := append(append([]byte{}, bad...), keys.hdr[:32]...)
	h := sha3.Sum256(full)
	hdr := append(append([]byte{}, keys.hdr[:32]...), h[:]...)
	if ekMatchesHeader(bad, hdr) {
		t.Fatal("non-canonical ek accepted")
	}
}

// kpkeKeyGen is FIPS 203 K-PKE.KeyGen + ML-KEM.KeyGen_internal, used to
// build the crate's 2400-byte expanded decapsulation key from a seed.
func expandedDK(seed []byte) (dk, ek []byte) {
	d, z := seed[:32], seed[32:]
	g := sha3.Sum512(append(append([]byte{}, d...), mlkemK))
	rho, sigma := g[:32], g[32:]
	var s, e [mlkemK]ringElem
	for i := 0; i < mlkemK; i++ {
		s[i] = sampleCBD(sigma, byte(i))
		ntt(&s[i])
		e[i] = sampleCBD(sigma, byte(mlkemK+i))
		ntt(&e[i])
	}
	var dkPKE []byte
	for i := 0; i < mlkemK; i++ {
		t := e[i]
		for j := 0; j < mlkemK; j++ {
			a := sampleNTT(rho, byte(j), byte(i)) // Â[i][j] = SampleNTT(ρ‖j‖i)
			mulAddNTT(&t, &a, &s[j])
		}
		ek = byteEncode(ek, &t, 12)
		dkPKE = byteEncode(dkPKE, &s[i], 12)
	}
	ek = append(ek, rho...)
	h := sha3.Sum256(ek)
	dk = append(append(append(dkPKE, ek...), h[:]...), z...)
	return dk, ek
}

// TestDecapsExpandedMatchesStdlib proves the decapsulation used for
// crate-written states (2400-byte keys), including implicit rejection.
func TestDecapsExpandedMatchesStdlib(t *testing.T) {
	r := testRand(3)
	for i := 0; i < 20; i++ {
		seed := make([]byte, 64)
		r.Read(seed)
		std, _ := mlkem.NewDecapsulationKey768(seed)
		dk, ek := expandedDK(seed)
		if !bytes.Equal(ek, std.EncapsulationKey().Bytes()) {
			t.Fatal("expanded key generation differs from crypto/mlkem")
		}
		if len(dk) != crateDKSize {
			t.Fatalf("dk size %d", len(dk))
		}
		ss, ct := std.EncapsulationKey().Encapsulate()
		got, _ := mlkemDecaps(dk, ct[:ct1Size], ct[ct1Size:])
		if !bytes.Equal(got, ss) {
			t.Fatal("expanded decapsulation differs")
		}
		rr := rand.New(r)
		ct[rr.IntN(len(ct))] ^= byte(1 + rr.IntN(255))
		want, _ := std.Decapsulate(ct)
		got, _ = mlkemDecaps(dk, ct[:ct1Size], ct[ct1Size:])
		if !bytes.Equal(got, want) {
			t.Fatal("implicit rejection differs")
		}
	}
}
