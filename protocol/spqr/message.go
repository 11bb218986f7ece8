package spqr

// Wire format of an SPQR V1 message (crate: src/v1/chunked/states/serialize.rs,
// Message::serialize / deserialize). This is not protobuf:
//
//	version  1 byte, 0x01
//	epoch    varint (LEB128, at most 10 bytes), never 0
//	index    varint, the chain key index (fits in 32 bits)
//	type     1 byte, msgType
//	chunk    for types Hdr, Ek, EkCt1Ack, Ct1, Ct2:
//	           varint chunk index (≤ 65535) ‖ 32 bytes of chunk data
//
// Trailing bytes after a complete message are ignored.

type msgType byte

const (
	msgNone     msgType = 0
	msgHdr      msgType = 1
	msgEk       msgType = 2
	msgEkCt1Ack msgType = 3
	msgCt1Ack   msgType = 4
	msgCt1      msgType = 5
	msgCt2      msgType = 6
)

const (
	versionV0 = 0
	versionV1 = 1
)

func (t msgType) hasChunk() bool {
	switch t {
	case msgHdr, msgEk, msgEkCt1Ack, msgCt1, msgCt2:
		return true
	}
	return false
}

type message struct {
	epoch uint64
	typ   msgType
	chunk chunk // valid when typ.hasChunk()
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// readVarint decodes up to 10 bytes like the crate: bits beyond 64 are
// silently dropped and an unterminated varint is an error.
func readVarint(b []byte, at *int) (uint64, error) {
	start := *at
	if start >= len(b) {
		return 0, ErrMsgDecode
	}
	var out uint64
	for i := 0; i < 10 && start+i < len(b); i++ {
		c := b[start+i]
		out |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			*at = start + i + 1
			return out, nil
		}
	}
	return 0, ErrMsgDecode
}

func (m *message) serialize(index uint32) []byte {
	out := make([]byte, 0, 48)
	out = append(out, versionV1)
	out = appendVarint(out, m.epoch)
	out = appendVarint(out, uint64(index))
	out = append(out, byte(m.typ))
	if m.typ.hasChunk() {
		out = appendVarint(out, uint64(m.chunk.index))
		out = append(out, m.chunk.data[:]...)
	}
	return out
}

func deserializeMessage(b []byte) (*message, uint32, error) {
	if len(b) == 0 || b[0] != versionV1 {
		return nil, 0, ErrMsgDecode
	}
	at := 1
	epoch, err := readVarint(b, &at)
	if err != nil {
		return nil, 0, err
	}
	if epoch == 0 {
		return nil, 0, ErrMsgDecode
	}
	idx, err := readVarint(b, &at)
	if err != nil {
		return nil, 0, err
	}
	if idx > 0xffffffff || at >= len(b) {
		return nil, 0, ErrMsgDecode
	}
	m := &message{epoch: epoch, typ: msgType(b[at])}
	at++
	if m.typ > msgCt2 {
		return nil, 0, ErrMsgDecode
	}
	if m.typ.hasChunk() {
		ci, err := readVarint(b, &at)
		if err != nil {
			return nil, 0, err
		}
		if at+chunkSize > len(b) || ci > 0xffff {
			return nil, 0, ErrMsgDecode
		}
		m.chunk.index = uint16(ci)
		copy(m.chunk.data[:], b[at:at+chunkSize])
	}
	return m, uint32(idx), nil
}
