package spqr

// Incremental ML-KEM-768, byte-compatible with libcrux-ml-kem's
// "incremental" API as SPQR uses it.
//
// The encapsulation key ek = ByteEncode12(t̂) ‖ ρ (FIPS 203) is sent in two
// parts:
//
//	header (64 bytes)   = ρ ‖ H(ek)            (libcrux pk1)
//	ek part (1152 bytes) = ByteEncode12(t̂)     (libcrux pk2)
//
// Encapsulation is split the same way: with only the header the sender can
// compute (K, r) = G(m ‖ H(ek)) and the first ciphertext part
// c1 = Compress10(u) (960 bytes), because u depends only on Â (from ρ) and
// r. The second part c2 = Compress4(v) (128 bytes) needs t̂. c1 ‖ c2 is an
// ordinary ML-KEM-768 ciphertext, so decapsulation is standard.
//
// Key generation and decapsulation use crypto/mlkem; the split
// encryption is implemented here from FIPS 203 (Algorithms 7-14, 17).

import (
	"crypto/mlkem"
	"crypto/sha3"
	"crypto/subtle"
	"encoding/binary"
	"io"
)

const (
	mlkemN   = 256
	mlkemQ   = 3329
	mlkemK   = 3
	mlkemEta = 2 // η1 = η2 = 2 for ML-KEM-768
	mlkemDu  = 10
	mlkemDv  = 4

	headerSize = 64                       // ρ ‖ H(ek)
	ekSize     = mlkemK * mlkemN * 12 / 8 // 1152, ByteEncode12(t̂)
	ct1Size    = mlkemK * mlkemN * mlkemDu / 8
	ct2Size    = mlkemN * mlkemDv / 8
	dkSeedSize = 64 // d ‖ z, the crypto/mlkem seed form
	// encapsStateSize is the size of our stored encapsulation state: the
	// encapsulation randomness m followed by H(ek).
	encapsStateSize = 64
	// The crate's (libcrux) forms of the same two values, accepted when
	// reading a state written by the Rust implementation.
	crateDKSize          = 2400
	crateEncapsStateSize = 2080
)

type ringElem [mlkemN]uint16 // coefficients in [0, q)

// zetas[i] = 17^BitRev7(i) mod q; gammas[i] = 17^(2·BitRev7(i)+1) mod q.
var zetas, gammas [128]uint16

func init() {
	pow := func(e int) uint16 {
		r := uint32(1)
		for i := 0; i < e; i++ {
			r = r * 17 % mlkemQ
		}
		return uint16(r)
	}
	for i := 0; i < 128; i++ {
		br := 0
		for b := 0; b < 7; b++ {
			if i&(1<<b) != 0 {
				br |= 1 << (6 - b)
			}
		}
		zetas[i] = pow(br)
		gammas[i] = pow(2*br + 1)
	}
}

func fqMul(a, b uint16) uint16 { return uint16(uint32(a) * uint32(b) % mlkemQ) }
func fqAdd(a, b uint16) uint16 { return uint16((uint32(a) + uint32(b)) % mlkemQ) }
func fqSub(a, b uint16) uint16 { return uint16((uint32(a) + mlkemQ - uint32(b)) % mlkemQ) }

// ntt is FIPS 203 Algorithm 9.
func ntt(f *ringElem) {
	i := 1
	for l := 128; l >= 2; l /= 2 {
		for start := 0; start < mlkemN; start += 2 * l {
			z := zetas[i]
			i++
			for j := start; j < start+l; j++ {
				t := fqMul(z, f[j+l])
				f[j+l] = fqSub(f[j], t)
				f[j] = fqAdd(f[j], t)
			}
		}
	}
}

// invNTT is FIPS 203 Algorithm 10.
func invNTT(f *ringElem) {
	i := 127
	for l := 2; l <= 128; l *= 2 {
		for start := 0; start < mlkemN; start += 2 * l {
			z := zetas[i]
			i--
			for j := start; j < start+l; j++ {
				t := f[j]
				f[j] = fqAdd(t, f[j+l])
				f[j+l] = fqMul(z, fqSub(f[j+l], t))
			}
		}
	}
	for j := range f {
		f[j] = fqMul(f[j], 3303) // 128^-1 mod q
	}
}

// mulAddNTT sets acc += a ∘ b (FIPS 203 Algorithms 11 and 12).
func mulAddNTT(acc, a, b *ringElem) {
	for i := 0; i < 128; i++ {
		a0, a1, b0, b1 := uint32(a[2*i]), uint32(a[2*i+1]), uint32(b[2*i]), uint32(b[2*i+1])
		c0 := (a0*b0 + (a1*b1%mlkemQ)*uint32(gammas[i])) % mlkemQ
		c1 := (a0*b1 + a1*b0) % mlkemQ
		acc[2*i] = fqAdd(acc[2*i], uint16(c0))
		acc[2*i+1] = fqAdd(acc[2*i+1], uint16(c1))
	}
}

// sampleNTT is FIPS 203 Algorithm 7 on SHAKE128(ρ ‖ j ‖ i).
func sampleNTT(rho []byte, j, i byte) ringElem {
	h := sha3.NewSHAKE128()
	h.Write(rho)
	h.Write([]byte{j, i})
	var a ringElem
	var buf [168]byte
	n := 0
	for n < mlkemN {
		h.Read(buf[:])
		for k := 0; k+3 <= len(buf) && n < mlkemN; k += 3 {
			d1 := uint16(buf[k]) | uint16(buf[k+1]&0x0f)<<8
			d2 := uint16(buf[k+1]>>4) | uint16(buf[k+2])<<4
			if d1 < mlkemQ {
				a[n] = d1
				n++
			}
			if d2 < mlkemQ && n < mlkemN {
				a[n] = d2
				n++
			}
		}
	}
	return a
}

// sampleCBD is SamplePolyCBD_2(PRF_2(σ, nonce)) (Algorithms 8 and PRF).
func sampleCBD(sigma []byte, nonce byte) ringElem {
	in := make([]byte, 0, 33)
	in = append(in, sigma...)
	in = append(in, nonce)
	b := sha3.SumSHAKE256(in, 64*mlkemEta)
	var f ringElem
	for i := 0; i < mlkemN/2; i++ {
		// each byte yields two coefficients (4 bits each for η = 2)
		v := b[i]
		for h := 0; h < 2; h++ {
			bits := v >> (4 * h)
			x := uint16(bits&1) + uint16(bits>>1&1)
			y := uint16(bits>>2&1) + uint16(bits>>3&1)
			f[2*i+h] = fqSub(x, y)
		}
	}
	return f
}

func compress(x uint16, d uint) uint16 {
	return uint16(((uint32(x)<<d)+mlkemQ/2)/mlkemQ) & (1<<d - 1)
}

// byteEncode packs 256 d-bit values little-endian bit first (Algorithm 5).
func byteEncode(out []byte, f *ringElem, d uint) []byte {
	var acc uint32
	var nbits uint
	for _, c := range f {
		acc |= uint32(c) << nbits
		nbits += d
		for nbits >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			nbits -= 8
		}
	}
	return out
}

// byteDecode12 unpacks a 12-bit encoded element; ok is false if a value
// is not below q (the FIPS 203 modulus check).
func byteDecode12(b []byte) (f ringElem, ok bool) {
	ok = true
	for i := 0; i < mlkemN/2; i++ {
		x := uint32(b[3*i]) | uint32(b[3*i+1])<<8 | uint32(b[3*i+2])<<16
		f[2*i] = uint16(x & 0xfff)
		f[2*i+1] = uint16(x >> 12)
		if f[2*i] >= mlkemQ || f[2*i+1] >= mlkemQ {
			ok = false
		}
	}
	return f, ok
}

// mlkemKeys is a freshly generated incremental key pair.
type mlkemKeys struct {
	hdr []byte // ρ ‖ H(ek), 64 bytes
	ek  []byte // ByteEncode12(t̂), 1152 bytes
	dk  []byte // 64-byte crypto/mlkem seed
}

// mlkemGenerate reads a 64-byte seed from rand and derives the key pair.
func mlkemGenerate(rand io.Reader) (*mlkemKeys, error) {
	seed := make([]byte, dkSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, err
	}
	dk, err := mlkem.NewDecapsulationKey768(seed)
	if err != nil {
		return nil, err
	}
	full := dk.EncapsulationKey().Bytes()
	h := sha3.Sum256(full)
	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, full[ekSize:]...)
	hdr = append(hdr, h[:]...)
	return &mlkemKeys{hdr: hdr, ek: append([]byte(nil), full[:ekSize]...), dk: seed}, nil
}

// ekMatchesHeader reports whether ek and hdr form a valid encapsulation
// key: H(ek ‖ ρ) equals the header's hash and every coefficient is below q.
func ekMatchesHeader(ek, hdr []byte) bool {
	if len(ek) != ekSize || len(hdr) != headerSize {
		return false
	}
	full := make([]byte, 0, ekSize+32)
	full = append(full, ek...)
	full = append(full, hdr[:32]...)
	h := sha3.Sum256(full)
	if subtle.ConstantTimeCompare(h[:], hdr[32:]) != 1 {
		return false
	}
	for i := 0; i < mlkemK; i++ {
		if _, ok := byteDecode12(ek[384*i : 384*(i+1)]); !ok {
			return false
		}
	}
	return true
}

// encapsState is what encapsulate2 needs from encapsulate1.
type encapsState struct {
	rHat [mlkemK]ringElem
	e2   ringElem
	m    [32]byte
}

// prepare derives (K, r) = G(m ‖ h) and the encryption noise.
func prepareEncaps(m, h []byte) (ss []byte, st *encapsState) {
	g := sha3.Sum512(append(append(make([]byte, 0, 64), m...), h...))
	sigma := g[32:]
	st = &encapsState{}
	copy(st.m[:], m)
	var nonce byte
	for i := 0; i < mlkemK; i++ {
		st.rHat[i] = sampleCBD(sigma, nonce)
		ntt(&st.rHat[i])
		nonce++
	}
	nonce += mlkemK // e1 is sampled by encapsulate1 from the same nonces
	st.e2 = sampleCBD(sigma, nonce)
	return append([]byte(nil), g[:32]...), st
}

// mlkemEncaps1 computes the first ciphertext part and the shared secret
// from the header and 32 bytes of randomness m. The returned state is
// the 64-byte m ‖ H(ek) from which encapsulate2 recomputes the rest.
func mlkemEncaps1(hdr, m []byte) (ct1, state, ss []byte) {
	rho, h := hdr[:32], hdr[32:64]
	g := sha3.Sum512(append(append(make([]byte, 0, 64), m...), h...))
	sigma := g[32:]
	var rHat [mlkemK]ringElem
	for i := 0; i < mlkemK; i++ {
		rHat[i] = sampleCBD(sigma, byte(i))
		ntt(&rHat[i])
	}
	ct1 = make([]byte, 0, ct1Size)
	for i := 0; i < mlkemK; i++ {
		var u ringElem
		for j := 0; j < mlkemK; j++ {
			a := sampleNTT(rho, byte(i), byte(j)) // Â[j][i] = SampleNTT(ρ‖i‖j)
			mulAddNTT(&u, &a, &rHat[j])
		}
		invNTT(&u)
		e1 := sampleCBD(sigma, byte(mlkemK+i))
		for k := range u {
			u[k] = compress(fqAdd(u[k], e1[k]), mlkemDu)
		}
		ct1 = byteEncode(ct1, &u, mlkemDu)
	}
	state = make([]byte, 0, encapsStateSize)
	state = append(state, m...)
	state = append(state, h...)
	return ct1, state, append([]byte(nil), g[:32]...)
}

// mlkemEncaps2 computes the second ciphertext part from the stored
// encapsulation state and the ek part (which must already be validated
// against the header).
func mlkemEncaps2(state, ek []byte) []byte {
	st := decodeEncapsState(state)
	var v ringElem
	for i := 0; i < mlkemK; i++ {
		t, _ := byteDecode12(ek[384*i : 384*(i+1)])
		mulAddNTT(&v, &t, &st.rHat[i])
	}
	invNTT(&v)
	for k := range v {
		mu := uint16(0)
		if st.m[k/8]>>(k%8)&1 == 1 {
			mu = (mlkemQ + 1) / 2 // Decompress1(1)
		}
		v[k] = compress(fqAdd(fqAdd(v[k], st.e2[k]), mu), mlkemDv)
	}
	return byteEncode(make([]byte, 0, ct2Size), &v, mlkemDv)
}

func decodeEncapsState(state []byte) *encapsState {
	if len(state) == crateEncapsStateSize {
		return decodeCrateEncapsState(state)
	}
	_, st := prepareEncaps(state[:32], state[32:64])
	return st
}

// decodeCrateEncapsState reads libcrux's serialized EncapsState: r̂ (three
// elements) and e2 as little-endian i16 coefficients, then m.
func decodeCrateEncapsState(b []byte) *encapsState {
	swapped := crateEncapsStateSwapped(b)
	coef := func(off int) uint16 {
		var v uint16
		if swapped {
			v = binary.BigEndian.Uint16(b[off:])
		} else {
			v = binary.LittleEndian.Uint16(b[off:])
		}
		x := int32(int16(v)) % mlkemQ
		if x < 0 {
			x += mlkemQ
		}
		return uint16(x)
	}
	st := &encapsState{}
	for i := 0; i < mlkemK; i++ {
		for k := 0; k < mlkemN; k++ {
			st.rHat[i][k] = coef(512*i + 2*k)
		}
	}
	for k := 0; k < mlkemN; k++ {
		st.e2[k] = coef(1536 + 2*k)
	}
	copy(st.m[:], b[2048:])
	return st
}

// crateEncapsStateSwapped reports whether a crate EncapsState has its i16s
// byte-swapped, as states written before libcrux PR 1276 do (libcrux
// issue 1275). Like the crate (incremental_mlkem768.rs) it looks at the
// first e2 coefficient that tells: e2 coefficients lie in [-2, 2].
func crateEncapsStateSwapped(b []byte) bool {
	for i := 1536; i < 2048; i += 2 {
		switch binary.LittleEndian.Uint16(b[i:]) {
		case 0x0000, 0xffff:
			// same in both byte orders
		case 0x0100, 0x0200, 0xfeff:
			return true
		default:
			return false
		}
	}
	return false
}

// mlkemDecaps decapsulates ct1 ‖ ct2 with our 64-byte seed form of the
// decapsulation key, or with the crate's 2400-byte expanded form.
func mlkemDecaps(dk, ct1, ct2 []byte) ([]byte, error) {
	ct := make([]byte, 0, ct1Size+ct2Size)
	ct = append(ct, ct1...)
	ct = append(ct, ct2...)
	if len(dk) == crateDKSize {
		return decapsExpanded(dk, ct), nil
	}
	key, err := mlkem.NewDecapsulationKey768(dk)
	if err != nil {
		return nil, err
	}
	return key.Decapsulate(ct)
}

// decapsExpanded is ML-KEM.Decaps_internal (Algorithm 18) for a standard
// 2400-byte decapsulation key dk_PKE ‖ ek ‖ H(ek) ‖ z. It is only used
// for states written by the Rust implementation.
func decapsExpanded(dk, ct []byte) []byte {
	dkPKE, ekFull, h, z := dk[:ekSize], dk[ekSize:ekSize+ekSize+32], dk[2*ekSize+32:2*ekSize+64], dk[2*ekSize+64:]
	// K-PKE.Decrypt
	var w ringElem
	for i := 0; i < mlkemK; i++ {
		u := decompressVec(ct[320*i:320*(i+1)], mlkemDu)
		ntt(&u)
		s, _ := byteDecode12(dkPKE[384*i : 384*(i+1)])
		mulAddNTT(&w, &s, &u)
	}
	invNTT(&w)
	v := decompressVec(ct[ct1Size:], mlkemDv)
	var m [32]byte
	for k := 0; k < mlkemN; k++ {
		if compress(fqSub(v[k], w[k]), 1) == 1 {
			m[k/8] |= 1 << (k % 8)
		}
	}
	ct1, st, ss := mlkemEncaps1(append(append([]byte{}, ekFull[ekSize:]...), h...), m[:])
	ct2 := mlkemEncaps2(st, ekFull[:ekSize])
	reject := sha3.NewSHAKE256()
	reject.Write(z)
	reject.Write(ct)
	kBar := make([]byte, 32)
	reject.Read(kBar)
	ok := subtle.ConstantTimeCompare(append(ct1, ct2...), ct)
	subtle.ConstantTimeCopy(1-ok, ss, kBar)
	return ss
}

func decompressVec(b []byte, d uint) ringElem {
	var f ringElem
	var acc uint32
	var nbits uint
	k := 0
	for _, c := range b {
		acc |= uint32(c) << nbits
		nbits += 8
		for nbits >= d && k < mlkemN {
			y := acc & (1<<d - 1)
			acc >>= d
			nbits -= d
			f[k] = uint16((y*mlkemQ + 1<<(d-1)) >> d)
			k++
		}
	}
	return f
}
