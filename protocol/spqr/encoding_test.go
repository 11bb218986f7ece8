package spqr

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// gfMulRef multiplies by Russian-peasant with per-step reduction, an
// independent formulation of the same field.
func gfMulRef(a, b uint16) uint16 {
	var p uint16
	for b != 0 {
		if b&1 != 0 {
			p ^= a
		}
		carry := a & 0x8000
		a <<= 1
		if carry != 0 {
			a ^= uint16(gfPoly & 0xffff)
		}
		b >>= 1
	}
	return p
}

func TestGF16(t *testing.T) {
	r := rand.New(testRand(20))
	for i := 0; i < 20000; i++ {
		a, b, c := uint16(r.Uint32()), uint16(r.Uint32()), uint16(r.Uint32())
		if gfMul(a, b) != gfMulRef(a, b) {
			t.Fatalf("%04x*%04x", a, b)
		}
		if gfMul(a, b) != gfMul(b, a) || gfMul(a, b^c) != gfMul(a, b)^gfMul(a, c) ||
			gfMul(gfMul(a, b), c) != gfMul(a, gfMul(b, c)) {
			t.Fatal("field laws")
		}
	}
	for a := 1; a < 1<<16; a++ {
		if gfMul(uint16(a), gfInv(uint16(a))) != 1 {
			t.Fatalf("inverse of %04x", a)
		}
	}
	// 0x1100b is irreducible iff the field has no zero divisors, which the
	// inverse check above establishes.
}

// TestErasureAnyChunks: any ceil(L/32) distinct chunks rebuild the message,
// whether they are original or computed chunks, in any order.
func TestErasureAnyChunks(t *testing.T) {
	r := rand.New(testRand(21))
	for _, size := range []int{2, 10, 30, 32, 64, hdrPayloadSize, ct2PayloadSize, ct1PayloadSize, 1088, ekPayloadSize} {
		need := (size + 31) / 32
		for trial := 0; trial < 8; trial++ {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(r.Uint32())
			}
			enc, err := newPolyEncoder(msg)
			if err != nil {
				t.Fatal(err)
			}
			// choose need distinct indices from [0, 3*need+5)
			perm := r.Perm(3*need + 5)[:need]
			dec, _ := newPolyDecoder(size)
			for i, idx := range perm {
				if got, ok := dec.decodedMessage(); ok {
					t.Fatalf("size %d: decoded early with %d chunks: %x", size, i, got)
				}
				c := enc.chunkAt(uint16(idx))
				dec.addChunk(&c)
			}
			got, ok := dec.decodedMessage()
			if !ok || !bytes.Equal(got, msg) {
				t.Fatalf("size %d, chunks %v: decode failed", size, perm)
			}
			// Round-trip the decoder through its serialized form.
			d2, err := parseDecoder(dec.marshal(), size)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := d2.decodedMessage(); !ok || !bytes.Equal(got, msg) {
				t.Fatal("decoder does not round-trip")
			}
		}
	}
}

// TestErasureSystematic: the first chunks are the message itself.
func TestErasureSystematic(t *testing.T) {
	msg := make([]byte, 96)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	enc, _ := newPolyEncoder(msg)
	for k := 0; k < 3; k++ {
		c := enc.nextChunk()
		if c.index != uint16(k) || !bytes.Equal(c.data[:], msg[32*k:32*k+32]) {
			t.Fatalf("chunk %d is not systematic", k)
		}
	}
	// After interpolation, the encoder still reproduces the originals.
	c3 := enc.nextChunk()
	enc2, err := parseEncoder(enc.marshal(), 96)
	if err != nil || !enc2.interpolated {
		t.Fatal("interpolated encoder does not round-trip")
	}
	for k := 0; k < 3; k++ {
		c := enc2.chunkAt(uint16(k))
		if !bytes.Equal(c.data[:], msg[32*k:32*k+32]) {
			t.Fatal("interpolated polynomials lost the data")
		}
	}
	if c := enc2.chunkAt(3); c != c3 {
		t.Fatal("chunk 3 differs after round trip")
	}
}

// The crate's encode_and_decode_small and encode_and_decode_large tests.
func TestErasureCrateCases(t *testing.T) {
	enc, _ := newPolyEncoder([]byte("abcdefghij"))
	dec, _ := newPolyDecoder(10)
	c1, c2 := enc.chunkAt(1), enc.chunkAt(2)
	dec.addChunk(&c1)
	dec.addChunk(&c2)
	if got, ok := dec.decodedMessage(); !ok || string(got) != "abcdefghij" {
		t.Fatalf("small: %q", got)
	}

	msg := bytes.Repeat([]byte{3}, 1088)
	needed := 1088/32 + 1
	enc, _ = newPolyEncoder(msg)
	dec, _ = newPolyDecoder(1088)
	for i := needed; i < 2*needed+1; i++ {
		c := enc.chunkAt(uint16(i))
		dec.addChunk(&c)
		if got, ok := dec.decodedMessage(); ok {
			if !bytes.Equal(got, msg) {
				t.Fatal("large: wrong message")
			}
			return
		}
	}
	t.Fatal("large: never decoded")
}

func TestInterpolate(t *testing.T) {
	r := rand.New(testRand(22))
	pts := make([]point, 30)
	for i := range pts {
		pts[i] = point{x: uint16(i), y: uint16(r.Uint32())}
	}
	p := interpolate(pts)
	for _, pt := range pts {
		if polyEval(p, pt.x) != pt.y {
			t.Fatal("interpolation misses a point")
		}
	}
	pts2 := make([]point, 30)
	for i := range pts2 {
		x := uint16(i + 30)
		pts2[i] = point{x: x, y: polyEval(p, x)}
	}
	p2 := interpolate(pts2)
	for _, pt := range pts {
		if polyEval(p2, pt.x) != pt.y {
			t.Fatal("re-interpolation differs")
		}
	}
}

func TestVarint(t *testing.T) {
	if got := appendVarint(nil, 0x012c); !bytes.Equal(got, []byte{0xac, 0x02}) {
		t.Fatalf("%x", got)
	}
	at := 1
	if v, err := readVarint([]byte{0xff, 0xac, 0x02, 0xff}, &at); err != nil || v != 0x012c || at != 3 {
		t.Fatal("decode")
	}
	at = 0
	if v, err := readVarint([]byte{0}, &at); err != nil || v != 0 || at != 1 {
		t.Fatal("decode zero")
	}
	r := rand.New(testRand(23))
	for i := 0; i < 10000; i++ {
		u := r.Uint64() >> r.IntN(64)
		b := appendVarint(nil, u)
		at := 0
		if v, err := readVarint(b, &at); err != nil || v != u || at != len(b) {
			t.Fatal("round trip")
		}
	}
}

// TestMessageBytes pins the wire layout.
func TestMessageBytes(t *testing.T) {
	var c chunk
	c.index = 300
	for i := range c.data {
		c.data[i] = byte(i)
	}
	m := &message{epoch: 5, typ: msgEk, chunk: c}
	got := m.serialize(0x012c)
	want := append([]byte{0x01, 0x05, 0xac, 0x02, 0x02, 0xac, 0x02}, c.data[:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x", got)
	}
	m2, idx, err := deserializeMessage(append(got, 0xde, 0xad)) // trailing data allowed
	if err != nil || idx != 0x012c || m2.epoch != 5 || m2.typ != msgEk || m2.chunk != c {
		t.Fatal("deserialize")
	}
	ack := &message{epoch: 1, typ: msgCt1Ack}
	if got := ack.serialize(7); !bytes.Equal(got, []byte{1, 1, 7, 4}) {
		t.Fatalf("ack: %x", got)
	}
}
