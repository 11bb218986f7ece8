package spqr

import (
	"encoding/binary"
	"errors"
	"sort"
)

// The SPQR erasure code. A message of L bytes (L even) is read as L/2
// big-endian 16-bit field elements; element i belongs to polynomial i%16
// and is that polynomial's value at x = i/16. Chunk number k (32 bytes)
// carries, for each of the 16 polynomials p, the value of p at x = k. The
// first chunks are therefore the message itself; later chunks are fresh
// evaluations, and any ceil(L/32) distinct chunks suffice to rebuild it.

const (
	chunkSize = 32
	numPolys  = chunkSize / 2
)

// chunk is one erasure-coded piece of a message.
type chunk struct {
	index uint16
	data  [chunkSize]byte
}

var errEncoding = errors.New("spqr: erasure coding")

// polyEncoder produces the chunks of one message.
type polyEncoder struct {
	idx uint32
	// Before the first chunk past the original data is requested the
	// encoder keeps the original points (pts); afterwards it keeps the
	// interpolated polynomials in coefficient form (polys, lowest degree
	// first). Exactly one of the two is in use, selected by interpolated.
	pts          [numPolys][]uint16
	polys        [numPolys][]uint16
	interpolated bool
}

func newPolyEncoder(msg []byte) (*polyEncoder, error) {
	if len(msg)%2 != 0 || len(msg) > (1<<16)*numPolys {
		return nil, errEncoding
	}
	e := &polyEncoder{}
	for p := range e.pts {
		e.pts[p] = make([]uint16, 0, len(msg)/2/numPolys+1)
	}
	for i := 0; i < len(msg)/2; i++ {
		e.pts[i%numPolys] = append(e.pts[i%numPolys], binary.BigEndian.Uint16(msg[2*i:]))
	}
	return e, nil
}

// nextChunk returns the chunk at the encoder's counter and advances it.
func (e *polyEncoder) nextChunk() chunk {
	c := e.chunkAt(uint16(e.idx))
	e.idx++
	return c
}

func (e *polyEncoder) chunkAt(idx uint16) chunk {
	c := chunk{index: idx}
	for p := 0; p < numPolys; p++ {
		binary.BigEndian.PutUint16(c.data[2*p:], e.pointAt(p, idx))
	}
	return c
}

func (e *polyEncoder) pointAt(p int, x uint16) uint16 {
	if !e.interpolated {
		if int(x) < len(e.pts[p]) {
			return e.pts[p][x]
		}
		for q := range e.pts {
			xs := make([]point, len(e.pts[q]))
			for i, y := range e.pts[q] {
				xs[i] = point{x: uint16(i), y: y}
			}
			e.polys[q] = interpolate(xs)
			e.pts[q] = nil
		}
		e.interpolated = true
	}
	return polyEval(e.polys[p], x)
}

// point is a point (x, y) of a polynomial over GF(2^16).
type point struct{ x, y uint16 }

// interpolate returns the coefficients (lowest first) of the unique
// polynomial of degree < len(pts) through pts, whose x values must be
// distinct.
func interpolate(pts []point) []uint16 {
	n := len(pts)
	out := make([]uint16, n)
	if n == 0 {
		return out
	}
	// m = prod (x - x_j), degree n.
	m := make([]uint16, n+1)
	m[0] = 1
	for j, pt := range pts {
		// multiply m (degree j) by (x + x_j)
		for k := j + 1; k >= 1; k-- {
			m[k] = m[k-1] ^ gfMul(m[k], pt.x)
		}
		m[0] = gfMul(m[0], pt.x)
	}
	q := make([]uint16, n)
	for i, pi := range pts {
		// q = m / (x - x_i) by synthetic division.
		q[n-1] = m[n]
		for k := n - 1; k >= 1; k-- {
			q[k-1] = m[k] ^ gfMul(pi.x, q[k])
		}
		denom := uint16(1)
		for j, pj := range pts {
			if j != i {
				denom = gfMul(denom, pi.x^pj.x)
			}
		}
		scale := gfDiv(pi.y, denom)
		for k := range out {
			out[k] ^= gfMul(scale, q[k])
		}
	}
	return out
}

// polyEval evaluates a polynomial in coefficient form at x (Horner).
func polyEval(c []uint16, x uint16) uint16 {
	var acc uint16
	for i := len(c) - 1; i >= 0; i-- {
		acc = gfMul(acc, x) ^ c[i]
	}
	return acc
}

// polyDecoder collects chunks of a message of known length.
type polyDecoder struct {
	ptsNeeded int
	// Per polynomial, the points received so far, sorted by x with
	// distinct x values.
	pts        [numPolys][]point
	isComplete bool
}

func newPolyDecoder(lenBytes int) (*polyDecoder, error) {
	if lenBytes%2 != 0 {
		return nil, errEncoding
	}
	return &polyDecoder{ptsNeeded: lenBytes / 2}, nil
}

func (d *polyDecoder) necessaryPoints(p int) int {
	n := d.ptsNeeded / numPolys
	if p < d.ptsNeeded%numPolys {
		n++
	}
	return n
}

// addChunk records the points of a chunk. A point is kept only if it is
// one of the original values (small x) or if the polynomial still lacks
// points; a point whose x is already known replaces the old one.
func (d *polyDecoder) addChunk(c *chunk) {
	x := c.index
	for p := 0; p < numPolys; p++ {
		y := binary.BigEndian.Uint16(c.data[2*p:])
		need := d.necessaryPoints(p)
		if int(x) < need || len(d.pts[p]) < need {
			d.pts[p] = insertPoint(d.pts[p], point{x: x, y: y})
		}
	}
}

func insertPoint(s []point, pt point) []point {
	i := sort.Search(len(s), func(i int) bool { return s[i].x >= pt.x })
	if i < len(s) && s[i].x == pt.x {
		s[i] = pt
		return s
	}
	s = append(s, point{})
	copy(s[i+1:], s[i:])
	s[i] = pt
	return s
}

// decodedMessage returns the message once enough chunks have arrived.
func (d *polyDecoder) decodedMessage() ([]byte, bool) {
	if d.isComplete {
		return nil, false
	}
	for p := 0; p < numPolys; p++ {
		if len(d.pts[p]) < d.necessaryPoints(p) {
			return nil, false
		}
	}
	var polys [numPolys][]uint16
	var have [numPolys]bool
	out := make([]byte, 0, 2*d.ptsNeeded)
	for i := 0; i < d.ptsNeeded; i++ {
		p, x := i%numPolys, uint16(i/numPolys)
		s := d.pts[p]
		j := sort.Search(len(s), func(j int) bool { return s[j].x >= x })
		var y uint16
		if j < len(s) && s[j].x == x {
			y = s[j].y
		} else {
			if !have[p] {
				polys[p] = interpolate(s[:d.necessaryPoints(p)])
				have[p] = true
			}
			y = polyEval(polys[p], x)
		}
		out = binary.BigEndian.AppendUint16(out, y)
	}
	return out, true
}
