package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
)

// Message versions. The first byte of every message carries the message's
// version in the high nibble and the sender's current version in the low.
const (
	// CurrentVersion is the version of PQXDH sessions and their messages.
	CurrentVersion = 4
	// legacyVersion is X3DH, refused like official libsignal refuses it.
	legacyVersion = 3
	// SenderKeyVersion is the version of sender-key (group) messages.
	SenderKeyVersion = 3

	macSize = 8
)

// MessageType is the type number of a ciphertext message, as libsignal's
// CiphertextMessageType and Signal's envelope types use it.
type MessageType int

// Message types.
const (
	TypeSignal    MessageType = 2 // a SignalMessage ("whisper")
	TypePreKey    MessageType = 3 // a PreKeySignalMessage
	TypeSenderKey MessageType = 7 // a SenderKeyMessage
)

// CiphertextMessage is an encrypted message ready to travel: its type and
// serialized bytes.
type CiphertextMessage struct {
	Type  MessageType
	Bytes []byte
}

// field is one decoded protobuf field: numbers, or bytes.
type fields struct {
	nums  map[protowire.Number]uint64
	bytes map[protowire.Number][]byte
}

func (f fields) num(n protowire.Number) (uint32, bool) {
	v, ok := f.nums[n]
	return uint32(v), ok
}

func (f fields) byt(n protowire.Number) ([]byte, bool) {
	v, ok := f.bytes[n]
	return v, ok
}

// parseFields decodes a flat protobuf message, keeping the last value of
// each varint and bytes field (as protobuf decoders do) and skipping
// unknown ones. Values of the wrong wire type for a known field, and
// malformed input, are errors.
func parseFields(b []byte, varints, byteFields []protowire.Number) (fields, error) {
	f := fields{nums: map[protowire.Number]uint64{}, bytes: map[protowire.Number][]byte{}}
	isIn := func(n protowire.Number, set []protowire.Number) bool {
		for _, x := range set {
			if x == n {
				return true
			}
		}
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return f, fmt.Errorf("%w: bad protobuf tag", ErrInvalidMessage)
		}
		b = b[n:]
		switch {
		case isIn(num, varints):
			if typ != protowire.VarintType {
				return f, fmt.Errorf("%w: field %d has wire type %d", ErrInvalidMessage, num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return f, fmt.Errorf("%w: bad varint in field %d", ErrInvalidMessage, num)
			}
			if v > 0xFFFFFFFF {
				return f, fmt.Errorf("%w: field %d out of range", ErrInvalidMessage, num)
			}
			f.nums[num] = v
			b = b[n:]
		case isIn(num, byteFields):
			if typ != protowire.BytesType {
				return f, fmt.Errorf("%w: field %d has wire type %d", ErrInvalidMessage, num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return f, fmt.Errorf("%w: bad bytes in field %d", ErrInvalidMessage, num)
			}
			f.bytes[num] = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return f, fmt.Errorf("%w: bad protobuf field %d", ErrInvalidMessage, num)
			}
			b = b[n:]
		}
	}
	return f, nil
}

func appendBytesField(b []byte, n protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarintField(b []byte, n protowire.Number, v uint32) []byte {
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// versionByte builds a message's first byte.
func versionByte(messageVersion, current byte) byte { return messageVersion<<4 | current }

// checkVersion reads the message version from a first byte.
func checkVersion(first byte, current byte, what string) (byte, error) {
	v := first >> 4
	if v < current {
		if v == legacyVersion && current == CurrentVersion {
			return 0, fmt.Errorf("%w: %s version 3 (X3DH); sessions are PQXDH (version 4) now", ErrLegacyMessage, what)
		}
		return 0, fmt.Errorf("%w: %s version %d, want %d", ErrLegacyMessage, what, v, current)
	}
	if v > current {
		return 0, fmt.Errorf("%w: %s version %d is newer than %d", ErrInvalidMessage, what, v, current)
	}
	return v, nil
}

// SignalMessage is a Double Ratchet message (version 4): the sender's
// ratchet key, counters, the AES-CBC ciphertext, the post-quantum ratchet
// message (SPQR) and an optional binding of sender and recipient
// addresses, followed by an 8-byte MAC.
type SignalMessage struct {
	Version         byte
	RatchetKey      PublicKey
	Counter         uint32
	PreviousCounter uint32
	Ciphertext      []byte
	PQRatchet       []byte
	Addresses       []byte // nil when the sender bound no addresses
	serialized      []byte
}

// ParseSignalMessage reads a serialized SignalMessage. The MAC is checked
// later, by the session that can compute it.
func ParseSignalMessage(b []byte) (*SignalMessage, error) {
	if len(b) < 1+macSize {
		return nil, fmt.Errorf("%w: SignalMessage of %d bytes is too short", ErrInvalidMessage, len(b))
	}
	v, err := checkVersion(b[0], CurrentVersion, "SignalMessage")
	if err != nil {
		return nil, err
	}
	f, err := parseFields(b[1:len(b)-macSize], []protowire.Number{2, 3}, []protowire.Number{1, 4, 5, 6})
	if err != nil {
		return nil, err
	}
	rk, ok := f.byt(1)
	counter, ok2 := f.num(2)
	ct, ok3 := f.byt(4)
	if !ok || !ok2 || !ok3 {
		return nil, fmt.Errorf("%w: SignalMessage lacks a ratchet key, counter or ciphertext", ErrInvalidMessage)
	}
	key, err := ParsePublicKey(rk)
	if err != nil {
		return nil, fmt.Errorf("%w: ratchet key: %v", ErrInvalidMessage, err)
	}
	prev, _ := f.num(3)
	pq, _ := f.byt(5)
	addrs, ok := f.byt(6)
	if ok && addrs == nil {
		addrs = []byte{} // present but empty: checked (and refused) like any binding
	}
	return &SignalMessage{
		Version: v, RatchetKey: key, Counter: counter, PreviousCounter: prev,
		Ciphertext: ct, PQRatchet: pq, Addresses: addrs,
		serialized: append([]byte(nil), b...),
	}, nil
}

// newSignalMessage builds and MACs a SignalMessage.
func newSignalMessage(version byte, macKey []byte, addresses []byte, ratchetKey PublicKey, counter, previous uint32,
	ciphertext []byte, senderIdentity, receiverIdentity PublicKey, pqRatchet []byte) *SignalMessage {
	b := []byte{versionByte(version, CurrentVersion)}
	b = appendBytesField(b, 1, ratchetKey.Bytes())
	b = appendVarintField(b, 2, counter)
	b = appendVarintField(b, 3, previous)
	b = appendBytesField(b, 4, ciphertext)
	if len(pqRatchet) > 0 {
		b = appendBytesField(b, 5, pqRatchet)
	}
	if len(addresses) > 0 {
		b = appendBytesField(b, 6, addresses)
	}
	b = append(b, messageMAC(senderIdentity, receiverIdentity, macKey, b)...)
	return &SignalMessage{
		Version: version, RatchetKey: ratchetKey, Counter: counter, PreviousCounter: previous,
		Ciphertext: ciphertext, PQRatchet: pqRatchet, Addresses: addresses, serialized: b,
	}
}

// messageMAC is HMAC-SHA256 over both identities and the message as
// serialized (its version byte as sent), cut to 8 bytes.
func messageMAC(sender, receiver PublicKey, macKey, message []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write(sender.Bytes())
	m.Write(receiver.Bytes())
	m.Write(message)
	return m.Sum(nil)[:macSize]
}

// verifyMAC checks the MAC over the bytes as received.
func (m *SignalMessage) verifyMAC(sender, receiver PublicKey, macKey []byte) bool {
	body := m.serialized[:len(m.serialized)-macSize]
	return hmac.Equal(messageMAC(sender, receiver, macKey, body), m.serialized[len(m.serialized)-macSize:])
}

// Bytes is the serialized message.
func (m *SignalMessage) Bytes() []byte { return append([]byte(nil), m.serialized...) }

// PreKeySignalMessage starts a session: the PQXDH material the recipient
// needs (which of its prekeys were used, the sender's base and identity
// keys, the Kyber ciphertext) around the first SignalMessage.
type PreKeySignalMessage struct {
	Version         byte
	RegistrationID  uint32
	PreKeyID        *uint32 // nil when no one-time EC prekey was used
	SignedPreKeyID  uint32
	KyberPreKeyID   uint32
	KyberCiphertext []byte
	BaseKey         PublicKey
	IdentityKey     PublicKey
	Message         *SignalMessage
	serialized      []byte
}

// ParsePreKeySignalMessage reads a serialized PreKeySignalMessage. Version-3
// (X3DH) messages and version-4 messages without Kyber material are refused.
func ParsePreKeySignalMessage(b []byte) (*PreKeySignalMessage, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty PreKeySignalMessage", ErrInvalidMessage)
	}
	v, err := checkVersion(b[0], CurrentVersion, "PreKeySignalMessage")
	if err != nil {
		return nil, err
	}
	f, err := parseFields(b[1:], []protowire.Number{1, 5, 6, 7}, []protowire.Number{2, 3, 4, 8})
	if err != nil {
		return nil, err
	}
	base, ok1 := f.byt(2)
	ident, ok2 := f.byt(3)
	inner, ok3 := f.byt(4)
	spk, ok4 := f.num(6)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("%w: PreKeySignalMessage lacks a base key, identity key, message or signed prekey id", ErrInvalidMessage)
	}
	kid, okK := f.num(7)
	kct, okC := f.byt(8)
	if !okK || !okC {
		return nil, fmt.Errorf("%w: PreKeySignalMessage lacks its Kyber prekey id or ciphertext", ErrInvalidMessage)
	}
	m := &PreKeySignalMessage{Version: v, SignedPreKeyID: spk, KyberPreKeyID: kid, KyberCiphertext: kct,
		serialized: append([]byte(nil), b...)}
	m.RegistrationID, _ = f.num(5)
	if id, ok := f.num(1); ok {
		m.PreKeyID = &id
	}
	if m.BaseKey, err = ParsePublicKey(base); err != nil {
		return nil, fmt.Errorf("%w: base key: %v", ErrInvalidMessage, err)
	}
	if m.IdentityKey, err = ParsePublicKey(ident); err != nil {
		return nil, fmt.Errorf("%w: identity key: %v", ErrInvalidMessage, err)
	}
	if m.Message, err = ParseSignalMessage(inner); err != nil {
		return nil, err
	}
	return m, nil
}

func newPreKeySignalMessage(version byte, registrationID uint32, preKeyID *uint32, signedPreKeyID, kyberID uint32,
	kyberCiphertext []byte, baseKey, identity PublicKey, msg *SignalMessage) *PreKeySignalMessage {
	b := []byte{versionByte(version, CurrentVersion)}
	if preKeyID != nil {
		b = appendVarintField(b, 1, *preKeyID)
	}
	b = appendBytesField(b, 2, baseKey.Bytes())
	b = appendBytesField(b, 3, identity.Bytes())
	b = appendBytesField(b, 4, msg.serialized)
	b = appendVarintField(b, 5, registrationID)
	b = appendVarintField(b, 6, signedPreKeyID)
	b = appendVarintField(b, 7, kyberID)
	b = appendBytesField(b, 8, kyberCiphertext)
	return &PreKeySignalMessage{Version: version, RegistrationID: registrationID, PreKeyID: preKeyID,
		SignedPreKeyID: signedPreKeyID, KyberPreKeyID: kyberID, KyberCiphertext: kyberCiphertext,
		BaseKey: baseKey, IdentityKey: identity, Message: msg, serialized: b}
}

// Bytes is the serialized message.
func (m *PreKeySignalMessage) Bytes() []byte { return append([]byte(nil), m.serialized...) }

// SenderKeyMessage is a group message encrypted under a sender key and
// signed by the sender's signing key.
type SenderKeyMessage struct {
	Version        byte
	DistributionID uuid.UUID
	ChainID        uint32
	Iteration      uint32
	Ciphertext     []byte
	serialized     []byte
}

// ParseSenderKeyMessage reads a serialized SenderKeyMessage; the signature
// is checked by GroupDecrypt, which knows the signing key.
func ParseSenderKeyMessage(b []byte) (*SenderKeyMessage, error) {
	if len(b) < 1+SignatureSize {
		return nil, fmt.Errorf("%w: SenderKeyMessage of %d bytes is too short", ErrInvalidMessage, len(b))
	}
	v, err := checkVersion(b[0], SenderKeyVersion, "SenderKeyMessage")
	if err != nil {
		return nil, err
	}
	f, err := parseFields(b[1:len(b)-SignatureSize], []protowire.Number{2, 3}, []protowire.Number{1, 4})
	if err != nil {
		return nil, err
	}
	dist, ok1 := f.byt(1)
	chain, ok2 := f.num(2)
	it, ok3 := f.num(3)
	ct, ok4 := f.byt(4)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("%w: SenderKeyMessage lacks a field", ErrInvalidMessage)
	}
	id, err := uuid.FromBytes(dist)
	if err != nil {
		return nil, fmt.Errorf("%w: distribution id is %d bytes", ErrInvalidMessage, len(dist))
	}
	return &SenderKeyMessage{Version: v, DistributionID: id, ChainID: chain, Iteration: it, Ciphertext: ct,
		serialized: append([]byte(nil), b...)}, nil
}

// Bytes is the serialized message.
func (m *SenderKeyMessage) Bytes() []byte { return append([]byte(nil), m.serialized...) }

// SenderKeyDistributionMessage hands a sender's group key (chain key,
// iteration and public signing key) to a member, inside a pairwise session.
type SenderKeyDistributionMessage struct {
	Version        byte
	DistributionID uuid.UUID
	ChainID        uint32
	Iteration      uint32
	ChainKey       []byte
	SigningKey     PublicKey
	serialized     []byte
}

// String shows the message without its chain key.
func (m *SenderKeyDistributionMessage) String() string {
	return fmt.Sprintf("SenderKeyDistributionMessage{distribution %s, chain %d, iteration %d}", m.DistributionID, m.ChainID, m.Iteration)
}

// GoString is String (%#v never shows the chain key).
func (m *SenderKeyDistributionMessage) GoString() string { return m.String() }

// ParseSenderKeyDistributionMessage reads a serialized distribution message.
func ParseSenderKeyDistributionMessage(b []byte) (*SenderKeyDistributionMessage, error) {
	if len(b) < 1+32+32 {
		return nil, fmt.Errorf("%w: SenderKeyDistributionMessage of %d bytes is too short", ErrInvalidMessage, len(b))
	}
	v, err := checkVersion(b[0], SenderKeyVersion, "SenderKeyDistributionMessage")
	if err != nil {
		return nil, err
	}
	f, err := parseFields(b[1:], []protowire.Number{2, 3}, []protowire.Number{1, 4, 5})
	if err != nil {
		return nil, err
	}
	dist, ok1 := f.byt(1)
	chain, ok2 := f.num(2)
	it, ok3 := f.num(3)
	ck, ok4 := f.byt(4)
	sk, ok5 := f.byt(5)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return nil, fmt.Errorf("%w: SenderKeyDistributionMessage lacks a field", ErrInvalidMessage)
	}
	id, err := uuid.FromBytes(dist)
	if err != nil {
		return nil, fmt.Errorf("%w: distribution id is %d bytes", ErrInvalidMessage, len(dist))
	}
	if len(ck) != 32 {
		return nil, fmt.Errorf("%w: chain key is %d bytes", ErrInvalidMessage, len(ck))
	}
	key, err := ParsePublicKey(sk)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key: %v", ErrInvalidMessage, err)
	}
	return &SenderKeyDistributionMessage{Version: v, DistributionID: id, ChainID: chain, Iteration: it,
		ChainKey: ck, SigningKey: key, serialized: append([]byte(nil), b...)}, nil
}

func newSenderKeyDistributionMessage(id uuid.UUID, chainID, iteration uint32, chainKey []byte, signing PublicKey) *SenderKeyDistributionMessage {
	b := []byte{versionByte(SenderKeyVersion, SenderKeyVersion)}
	b = appendBytesField(b, 1, id[:])
	b = appendVarintField(b, 2, chainID)
	b = appendVarintField(b, 3, iteration)
	b = appendBytesField(b, 4, chainKey)
	b = appendBytesField(b, 5, signing.Bytes())
	return &SenderKeyDistributionMessage{Version: SenderKeyVersion, DistributionID: id, ChainID: chainID,
		Iteration: iteration, ChainKey: chainKey, SigningKey: signing, serialized: b}
}

// Bytes is the serialized message.
func (m *SenderKeyDistributionMessage) Bytes() []byte { return append([]byte(nil), m.serialized...) }
