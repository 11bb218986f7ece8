package spqr

// Arithmetic in GF(2^16) with the reduction polynomial
// x^16 + x^12 + x^3 + x + 1 (0x1100b), the field the SPQR erasure code
// works in. Addition and subtraction are XOR.

const gfPoly = 0x1100b

// gfMul multiplies two field elements (carry-less product, then reduction).
func gfMul(a, b uint16) uint16 {
	var p uint32
	aa := uint32(a)
	for i := 0; i < 16; i++ {
		if b&(1<<i) != 0 {
			p ^= aa << i
		}
	}
	for i := 31; i >= 16; i-- {
		if p&(1<<i) != 0 {
			p ^= gfPoly << (i - 16)
		}
	}
	return uint16(p)
}

// gfInv returns the multiplicative inverse of a (a^(2^16-2)); gfInv(0) is 0.
func gfInv(a uint16) uint16 {
	// a^(2^16-2) = a^(2+4+...+2^15).
	sq := gfMul(a, a)
	out := uint16(1)
	for i := 1; i < 16; i++ {
		out = gfMul(out, sq)
		sq = gfMul(sq, sq)
	}
	return out
}

// gfDiv returns a/b.
func gfDiv(a, b uint16) uint16 { return gfMul(a, gfInv(b)) }
