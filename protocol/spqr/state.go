package spqr

import (
	"encoding/binary"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
)

// Serialized state, in the layout of the crate's src/proto/pq_ratchet.proto
// (message PqRatchetState). Two fields differ in content from the crate,
// because Go's crypto/mlkem only takes the seed form of a decapsulation
// key: "dk" holds the 64-byte seed (the crate: the 2400-byte expanded
// key), and "es" holds m ‖ H(ek) (64 bytes; the crate: libcrux's
// 2080-byte EncapsState). The crate's forms are accepted when reading.

type versionNegotiation struct {
	authKey    []byte
	direction  Direction
	minVersion uint64
	params     *chainParams // nil if absent
}

type state struct {
	vn    *versionNegotiation
	chain *chain
	v1    *v1State
}

// ---- writing ----

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendRepeatedBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendMsg(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func (p chainParams) marshal() []byte {
	b := appendUint(nil, 1, uint64(p.maxJump))
	return appendUint(b, 2, uint64(p.maxOOOKeys))
}

func (st *state) marshal() []byte {
	var b []byte
	if vn := st.vn; vn != nil {
		var v []byte
		v = appendBytes(v, 1, vn.authKey)
		v = appendUint(v, 2, uint64(vn.direction))
		v = appendUint(v, 3, vn.minVersion)
		if vn.params != nil {
			v = appendMsg(v, 4, vn.params.marshal())
		}
		b = appendMsg(b, 1, v)
	}
	if st.chain != nil {
		b = appendMsg(b, 2, st.chain.marshal())
	}
	if st.v1 != nil {
		b = appendMsg(b, 3, st.v1.marshal())
	}
	return b
}

func (d *chainDir) marshal() []byte {
	b := appendUint(nil, 1, uint64(d.ctr))
	b = appendBytes(b, 2, d.next)
	return appendBytes(b, 3, d.prev)
}

func (c *chain) marshal() []byte {
	b := appendUint(nil, 1, uint64(c.dir))
	b = appendUint(b, 2, c.currentEpoch)
	for i := range c.links {
		l := appendMsg(nil, 1, c.links[i].send.marshal())
		l = appendMsg(l, 2, c.links[i].recv.marshal())
		b = appendMsg(b, 3, l)
	}
	b = appendBytes(b, 4, c.nextRoot)
	b = appendUint(b, 5, c.sendEpoch)
	return appendMsg(b, 6, c.params.marshal())
}

func (e *polyEncoder) marshal() []byte {
	b := appendUint(nil, 1, uint64(e.idx))
	if e.interpolated {
		for _, p := range e.polys {
			b = appendRepeatedBytes(b, 3, u16sBE(p))
		}
	} else {
		for _, p := range e.pts {
			b = appendRepeatedBytes(b, 2, u16sBE(p))
		}
	}
	return b
}

func u16sBE(v []uint16) []byte {
	out := make([]byte, 0, 2*len(v))
	for _, x := range v {
		out = binary.BigEndian.AppendUint16(out, x)
	}
	return out
}

func (d *polyDecoder) marshal() []byte {
	b := appendUint(nil, 1, uint64(d.ptsNeeded))
	b = appendUint(b, 2, numPolys)
	for _, pts := range d.pts {
		v := make([]byte, 0, 4*len(pts))
		for _, p := range pts {
			v = binary.BigEndian.AppendUint16(v, p.x)
			v = binary.BigEndian.AppendUint16(v, p.y)
		}
		b = appendRepeatedBytes(b, 3, v)
	}
	if d.isComplete {
		b = appendUint(b, 4, 1)
	}
	return b
}

// v1Layout says, per state kind, which fields the unchunked ("uc")
// message carries and where the encoder/decoder go in the chunked one.
type v1Field struct {
	num  protowire.Number
	get  func(*v1State) *[]byte
	size []int // allowed lengths
}

var (
	fEk  = func(s *v1State) *[]byte { return &s.ek }
	fDk  = func(s *v1State) *[]byte { return &s.dk }
	fHdr = func(s *v1State) *[]byte { return &s.hdr }
	fEs  = func(s *v1State) *[]byte { return &s.es }
	fCt1 = func(s *v1State) *[]byte { return &s.ct1 }

	szEk  = []int{ekSize}
	szDk  = []int{dkSeedSize, crateDKSize}
	szHdr = []int{headerSize}
	szEs  = []int{encapsStateSize, crateEncapsStateSize}
	szCt1 = []int{ct1Size}
)

type v1Layout struct {
	uc       []v1Field
	encField protowire.Number // 0: none
	encSize  int
	decField protowire.Number
	decSize  int
}

var v1Layouts = map[sckaKind]v1Layout{
	kKeysUnsampled:        {},
	kKeysSampled:          {uc: []v1Field{{3, fEk, szEk}, {4, fDk, szDk}}, encField: 2, encSize: hdrPayloadSize},
	kHeaderSent:           {uc: []v1Field{{3, fDk, szDk}}, encField: 2, encSize: ekPayloadSize, decField: 3, decSize: ct1PayloadSize},
	kCt1Received:          {uc: []v1Field{{3, fDk, szDk}, {4, fCt1, szCt1}}, encField: 2, encSize: ekPayloadSize},
	kEkSentCt1Received:    {uc: []v1Field{{3, fDk, szDk}, {4, fCt1, szCt1}}, decField: 3, decSize: ct2PayloadSize},
	kNoHeaderReceived:     {decField: 2, decSize: hdrPayloadSize},
	kHeaderReceived:       {uc: []v1Field{{3, fHdr, szHdr}}, decField: 2, decSize: ekPayloadSize},
	kCt1Sampled:           {uc: []v1Field{{3, fHdr, szHdr}, {4, fEs, szEs}, {5, fCt1, szCt1}}, encField: 2, encSize: ct1PayloadSize, decField: 3, decSize: ekPayloadSize},
	kEkReceivedCt1Sampled: {uc: []v1Field{{3, fEs, szEs}, {4, fEk, szEk}, {5, fCt1, szCt1}}, encField: 2, encSize: ct1PayloadSize},
	kCt1Acknowledged:      {uc: []v1Field{{3, fHdr, szHdr}, {4, fEs, szEs}, {5, fCt1, szCt1}}, decField: 2, decSize: ekPayloadSize},
	kCt2Sampled:           {encField: 2, encSize: ct2PayloadSize},
}

func (s *v1State) marshal() []byte {
	lay := v1Layouts[s.kind]
	var auth []byte
	auth = appendBytes(auth, 1, s.auth.rootKey)
	auth = appendBytes(auth, 2, s.auth.macKey)
	uc := appendUint(nil, 1, s.epoch)
	uc = appendMsg(uc, 2, auth)
	for _, f := range lay.uc {
		uc = appendBytes(uc, f.num, *f.get(s))
	}
	ch := appendMsg(nil, 1, uc)
	// fields in number order, as a protobuf encoder would write them
	type sub struct {
		num protowire.Number
		b   []byte
	}
	var subs []sub
	if lay.encField != 0 {
		subs = append(subs, sub{lay.encField, s.enc.marshal()})
	}
	if lay.decField != 0 {
		subs = append(subs, sub{lay.decField, s.dec.marshal()})
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].num < subs[j].num })
	for _, x := range subs {
		ch = appendMsg(ch, x.num, x.b)
	}
	return appendMsg(nil, protowire.Number(s.kind), ch)
}

// ---- reading ----

// walk calls f for every field of a protobuf message. Varint fields get
// their value in u, length-delimited fields in v; other wire types are
// skipped.
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrStateDecode
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n >= 0 {
				b = b[n:]
				continue
			}
		}
		if n < 0 {
			return ErrStateDecode
		}
		b = b[n:]
		if err := f(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

func want(typ, exp protowire.Type) error {
	if typ != exp {
		return ErrStateDecode
	}
	return nil
}

func cloneBytes(v []byte) []byte { return append([]byte(nil), v...) }

func parseState(b []byte) (*state, error) {
	st := &state{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num < 1 || num > 3 {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		var err error
		switch num {
		case 1:
			st.vn, err = parseVN(v)
		case 2:
			st.chain, err = parseChain(v)
		case 3:
			st.v1, err = parseV1(v)
		}
		return err
	})
	if err != nil {
		return nil, ErrStateDecode
	}
	return st, nil
}

func parseParams(b []byte) (*chainParams, error) {
	p := &chainParams{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, u uint64) error {
		switch num {
		case 1, 2:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			if num == 1 {
				p.maxJump = uint32(u)
			} else {
				p.maxOOOKeys = uint32(u)
			}
		}
		return nil
	})
	return p, err
}

func parseDirection(u uint64) (Direction, error) {
	switch u {
	case 0:
		return A2B, nil
	case 1:
		return B2A, nil
	}
	return 0, ErrStateDecode
}

func parseVN(b []byte) (*versionNegotiation, error) {
	vn := &versionNegotiation{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		var err error
		switch num {
		case 1:
			if err = want(typ, protowire.BytesType); err == nil {
				vn.authKey = cloneBytes(v)
			}
		case 2:
			if err = want(typ, protowire.VarintType); err == nil {
				vn.direction, err = parseDirection(u)
			}
		case 3:
			if err = want(typ, protowire.VarintType); err == nil {
				if u > versionV1 {
					err = ErrStateDecode
				}
				vn.minVersion = u
			}
		case 4:
			if err = want(typ, protowire.BytesType); err == nil {
				vn.params, err = parseParams(v)
			}
		}
		return err
	})
	return vn, err
}

func parseChainDir(b []byte) (chainDir, error) {
	var d chainDir
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		var err error
		switch num {
		case 1:
			if err = want(typ, protowire.VarintType); err == nil {
				d.ctr = uint32(u)
			}
		case 2:
			if err = want(typ, protowire.BytesType); err == nil {
				d.next = cloneBytes(v)
			}
		case 3:
			if err = want(typ, protowire.BytesType); err == nil {
				d.prev = cloneBytes(v)
			}
		}
		return err
	})
	if err == nil && ((len(d.next) != 0 && len(d.next) != 32) || len(d.prev)%keyHistEntry != 0) {
		err = ErrStateDecode
	}
	return d, err
}

func parseChain(b []byte) (*chain, error) {
	c := &chain{}
	var params *chainParams
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		var err error
		switch num {
		case 1:
			if err = want(typ, protowire.VarintType); err == nil {
				c.dir, err = parseDirection(u)
			}
		case 2, 5:
			if err = want(typ, protowire.VarintType); err == nil {
				if num == 2 {
					c.currentEpoch = u
				} else {
					c.sendEpoch = u
				}
			}
		case 3:
			if err = want(typ, protowire.BytesType); err != nil {
				return err
			}
			var link chainEpoch
			var hasSend, hasRecv bool
			err = walk(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				var err error
				switch num {
				case 1, 2:
					if err = want(typ, protowire.BytesType); err != nil {
						return err
					}
					var d chainDir
					if d, err = parseChainDir(v); err != nil {
						return err
					}
					if num == 1 {
						link.send, hasSend = d, true
					} else {
						link.recv, hasRecv = d, true
					}
				}
				return err
			})
			if err == nil && (!hasSend || !hasRecv) {
				err = ErrStateDecode
			}
			c.links = append(c.links, link)
		case 4:
			if err = want(typ, protowire.BytesType); err == nil {
				c.nextRoot = cloneBytes(v)
			}
		case 6:
			if err = want(typ, protowire.BytesType); err == nil {
				params, err = parseParams(v)
			}
		}
		return err
	})
	if err != nil || params == nil || len(c.nextRoot) != 32 || len(c.links) == 0 ||
		uint64(len(c.links)-1) > c.currentEpoch || c.sendEpoch > c.currentEpoch {
		return nil, ErrStateDecode
	}
	c.params = *params
	return c, nil
}

func sizeOK(n int, allowed []int) bool {
	for _, a := range allowed {
		if n == a {
			return true
		}
	}
	return false
}

func parseV1(b []byte) (*v1State, error) {
	var s *v1State
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		lay, ok := v1Layouts[sckaKind(num)]
		if !ok {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		var err error
		s, err = parseV1Kind(sckaKind(num), lay, v)
		return err
	})
	if err != nil || s == nil {
		return nil, ErrStateDecode
	}
	return s, nil
}

func parseV1Kind(kind sckaKind, lay v1Layout, b []byte) (*v1State, error) {
	s := &v1State{kind: kind}
	var ucSeen bool
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 && num != lay.encField && num != lay.decField {
			return nil
		}
		if err := want(typ, protowire.BytesType); err != nil {
			return err
		}
		var err error
		switch num {
		case 1:
			ucSeen = true
			err = parseUC(s, lay, v)
		case lay.encField:
			s.enc, err = parseEncoder(v, lay.encSize)
		case lay.decField:
			s.dec, err = parseDecoder(v, lay.decSize)
		}
		return err
	})
	if err != nil || !ucSeen || s.auth == nil || s.epoch == 0 || s.epoch == ^uint64(0) ||
		(lay.encField != 0 && s.enc == nil) || (lay.decField != 0 && s.dec == nil) {
		return nil, ErrStateDecode
	}
	for _, f := range lay.uc {
		if !sizeOK(len(*f.get(s)), f.size) {
			return nil, ErrStateDecode
		}
	}
	return s, nil
}

func parseUC(s *v1State, lay v1Layout, b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			s.epoch = u
			return nil
		case 2:
			if err := want(typ, protowire.BytesType); err != nil {
				return err
			}
			a := &authenticator{}
			err := walk(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 1 || num == 2 {
					if err := want(typ, protowire.BytesType); err != nil {
						return err
					}
					if num == 1 {
						a.rootKey = cloneBytes(v)
					} else {
						a.macKey = cloneBytes(v)
					}
				}
				return nil
			})
			if err != nil || len(a.rootKey) != 32 || len(a.macKey) != 32 {
				return ErrStateDecode
			}
			s.auth = a
			return nil
		}
		for _, f := range lay.uc {
			if f.num == num {
				if err := want(typ, protowire.BytesType); err != nil {
					return err
				}
				*f.get(s) = cloneBytes(v)
			}
		}
		return nil
	})
}

// parseEncoder reads a PolynomialEncoder and checks that it encodes a
// payload of msgSize bytes.
func parseEncoder(b []byte, msgSize int) (*polyEncoder, error) {
	e := &polyEncoder{}
	var pts, polys [][]byte
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			e.idx = uint32(u)
		case 2, 3:
			if err := want(typ, protowire.BytesType); err != nil {
				return err
			}
			if len(pts)+len(polys) >= numPolys {
				return ErrStateDecode
			}
			if num == 2 {
				pts = append(pts, v)
			} else {
				polys = append(polys, v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, ErrStateDecode
	}
	need := func(p int) int {
		n := msgSize / 2 / numPolys
		if p < msgSize/2%numPolys {
			n++
		}
		return n
	}
	var src [][]byte
	switch {
	case len(pts) == numPolys && len(polys) == 0:
		src = pts
	case len(polys) == numPolys && len(pts) == 0:
		src, e.interpolated = polys, true
	default:
		return nil, ErrStateDecode
	}
	for p, raw := range src {
		if len(raw) != 2*need(p) {
			return nil, ErrStateDecode
		}
		vals := make([]uint16, need(p))
		for i := range vals {
			vals[i] = binary.BigEndian.Uint16(raw[2*i:])
		}
		if e.interpolated {
			e.polys[p] = vals
		} else {
			e.pts[p] = vals
		}
	}
	return e, nil
}

// parseDecoder reads a PolynomialDecoder for a payload of msgSize bytes.
func parseDecoder(b []byte, msgSize int) (*polyDecoder, error) {
	d := &polyDecoder{}
	var pts [][]byte
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			d.ptsNeeded = int(u & 0xffffffff)
		case 3:
			if err := want(typ, protowire.BytesType); err != nil {
				return err
			}
			if len(pts) >= numPolys {
				return ErrStateDecode
			}
			pts = append(pts, v)
		case 4:
			if err := want(typ, protowire.VarintType); err != nil {
				return err
			}
			d.isComplete = u != 0
		}
		return nil
	})
	if err != nil || d.ptsNeeded != msgSize/2 || len(pts) != numPolys {
		return nil, ErrStateDecode
	}
	for p, raw := range pts {
		// A decoder never holds more than twice the points it needs.
		if len(raw)%4 != 0 || len(raw)/4 > 2*d.necessaryPoints(p) {
			return nil, ErrStateDecode
		}
		for i := 0; i < len(raw); i += 4 {
			d.pts[p] = insertPoint(d.pts[p], point{x: binary.BigEndian.Uint16(raw[i:]), y: binary.BigEndian.Uint16(raw[i+2:])})
		}
	}
	return d, nil
}
