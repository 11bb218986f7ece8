package spqr

import (
	"fmt"
	"io"
)

// The V1 sparse continuous key agreement: the "ML-KEM Braid" state machine
// (crate: src/v1/chunked/states.rs, send_ek.rs, send_ct.rs and their
// unchunked counterparts). The two parties alternate roles per epoch: one
// sends an encapsulation key (header, then ek), the other a ciphertext
// (ct1, then ct2 with a MAC). Every payload is erasure-coded into 32-byte
// chunks, one per message.

// sckaKind names a state; the values are the V1State oneof field numbers
// of the crate's protobuf.
type sckaKind int

const (
	// send_ek role
	kKeysUnsampled     sckaKind = 1
	kKeysSampled       sckaKind = 2
	kHeaderSent        sckaKind = 3
	kCt1Received       sckaKind = 4
	kEkSentCt1Received sckaKind = 5
	// send_ct role
	kNoHeaderReceived     sckaKind = 6
	kHeaderReceived       sckaKind = 7
	kCt1Sampled           sckaKind = 8
	kEkReceivedCt1Sampled sckaKind = 9
	kCt1Acknowledged      sckaKind = 10
	kCt2Sampled           sckaKind = 11
)

// Sizes of the erasure-coded payloads.
const (
	hdrPayloadSize = headerSize + macSize // 96
	ekPayloadSize  = ekSize               // 1152
	ct1PayloadSize = ct1Size              // 960
	ct2PayloadSize = ct2Size + macSize    // 160
)

type v1State struct {
	kind  sckaKind
	epoch uint64
	auth  *authenticator
	// Fields used depending on kind (see state.go for which).
	ek, dk, hdr, es, ct1 []byte
	enc                  *polyEncoder // the payload being sent
	dec                  *polyDecoder // the payload being received
}

type epochSecret struct {
	epoch  uint64
	secret []byte
}

func initA(authKey []byte) *v1State {
	return &v1State{kind: kKeysUnsampled, epoch: 1, auth: newAuthenticator(authKey, 1)}
}

func initB(authKey []byte) *v1State {
	d, _ := newPolyDecoder(hdrPayloadSize)
	return &v1State{kind: kNoHeaderReceived, epoch: 1, auth: newAuthenticator(authKey, 1), dec: d}
}

func mustEncoder(b []byte) *polyEncoder {
	e, err := newPolyEncoder(b)
	if err != nil {
		panic("spqr: fixed-size payload cannot be encoded") // sizes are constants
	}
	return e
}

func mustDecoder(n int) *polyDecoder {
	d, err := newPolyDecoder(n)
	if err != nil {
		panic("spqr: fixed-size payload cannot be decoded")
	}
	return d
}

// send advances the state for an outgoing message.
func (s *v1State) send(rand io.Reader) (*message, *epochSecret, error) {
	m := &message{epoch: s.epoch, typ: msgNone}
	var key *epochSecret
	switch s.kind {
	case kKeysUnsampled:
		keys, err := mlkemGenerate(rand)
		if err != nil {
			return nil, nil, err
		}
		mac := s.auth.macHdr(s.epoch, keys.hdr)
		s.enc = mustEncoder(append(append([]byte{}, keys.hdr...), mac...))
		s.ek, s.dk = keys.ek, keys.dk
		s.kind = kKeysSampled
		m.typ, m.chunk = msgHdr, s.enc.nextChunk()
	case kKeysSampled:
		m.typ, m.chunk = msgHdr, s.enc.nextChunk()
	case kHeaderSent:
		m.typ, m.chunk = msgEk, s.enc.nextChunk()
	case kCt1Received:
		m.typ, m.chunk = msgEkCt1Ack, s.enc.nextChunk()
	case kEkSentCt1Received:
		m.typ = msgCt1Ack
	case kNoHeaderReceived, kCt1Acknowledged:
		// nothing to send
	case kHeaderReceived:
		r := make([]byte, 32)
		if _, err := io.ReadFull(rand, r); err != nil {
			return nil, nil, err
		}
		ct1, es, ss := mlkemEncaps1(s.hdr, r)
		secret := sckaKey(ss, s.epoch)
		s.auth.update(s.epoch, secret)
		s.es, s.ct1 = es, ct1
		s.enc = mustEncoder(ct1)
		// s.dec (receiving ek) carries over
		s.kind = kCt1Sampled
		m.typ, m.chunk = msgCt1, s.enc.nextChunk()
		key = &epochSecret{epoch: s.epoch, secret: secret}
	case kCt1Sampled, kEkReceivedCt1Sampled:
		m.typ, m.chunk = msgCt1, s.enc.nextChunk()
	case kCt2Sampled:
		m.typ, m.chunk = msgCt2, s.enc.nextChunk()
	default:
		return nil, nil, ErrStateDecode
	}
	return m, key, nil
}

// sendCt2 computes ct2 and its MAC and moves to Ct2Sampled.
func (s *v1State) sendCt2() {
	ct2 := mlkemEncaps2(s.es, s.ek)
	full := append(append([]byte{}, s.ct1...), ct2...)
	mac := s.auth.macCt(s.epoch, full)
	s.enc = mustEncoder(append(ct2, mac...))
	s.dec = nil
	s.ek, s.es, s.ct1, s.hdr = nil, nil, nil, nil
	s.kind = kCt2Sampled
}

// recv advances the state for an incoming message. On error the state must
// be discarded.
func (s *v1State) recv(m *message) (*epochSecret, error) {
	if m.epoch > s.epoch {
		if s.kind == kCt2Sampled && m.epoch == s.epoch+1 {
			s.kind = kKeysUnsampled
			s.epoch++
			s.enc = nil
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %d", ErrEpochOutOfRange, m.epoch)
	}
	if m.epoch < s.epoch {
		return nil, nil
	}
	switch s.kind {
	case kKeysSampled:
		if m.typ == msgCt1 {
			s.dec = mustDecoder(ct1PayloadSize)
			s.dec.addChunk(&m.chunk)
			s.enc = mustEncoder(s.ek)
			s.ek = nil
			s.kind = kHeaderSent
		}
	case kHeaderSent:
		if m.typ == msgCt1 {
			s.dec.addChunk(&m.chunk)
			if ct1, ok := s.dec.decodedMessage(); ok {
				s.ct1 = ct1
				s.dec = nil
				s.kind = kCt1Received
			}
		}
	case kCt1Received:
		if m.typ == msgCt2 {
			s.dec = mustDecoder(ct2PayloadSize)
			s.dec.addChunk(&m.chunk)
			s.enc = nil
			s.kind = kEkSentCt1Received
		}
	case kEkSentCt1Received:
		if m.typ == msgCt2 {
			s.dec.addChunk(&m.chunk)
			payload, ok := s.dec.decodedMessage()
			if !ok {
				return nil, nil
			}
			ct2, mac := payload[:ct2Size], payload[ct2Size:]
			ss, err := mlkemDecaps(s.dk, s.ct1, ct2)
			if err != nil {
				return nil, ErrStateDecode
			}
			secret := sckaKey(ss, s.epoch)
			s.auth.update(s.epoch, secret)
			if err := s.auth.verifyCt(s.epoch, append(append([]byte{}, s.ct1...), ct2...), mac); err != nil {
				return nil, err
			}
			key := &epochSecret{epoch: s.epoch, secret: secret}
			s.kind = kNoHeaderReceived
			s.epoch++
			s.dk, s.ct1 = nil, nil
			s.dec = mustDecoder(hdrPayloadSize)
			return key, nil
		}
	case kNoHeaderReceived:
		if m.typ == msgHdr {
			s.dec.addChunk(&m.chunk)
			payload, ok := s.dec.decodedMessage()
			if !ok {
				return nil, nil
			}
			hdr, mac := payload[:headerSize], payload[headerSize:]
			if err := s.auth.verifyHdr(s.epoch, hdr, mac); err != nil {
				return nil, err
			}
			s.hdr = hdr
			s.dec = mustDecoder(ekPayloadSize)
			s.kind = kHeaderReceived
		}
	case kCt1Sampled:
		var ack bool
		switch m.typ {
		case msgEk:
		case msgEkCt1Ack:
			ack = true
		default:
			return nil, nil
		}
		s.dec.addChunk(&m.chunk)
		if ek, ok := s.dec.decodedMessage(); ok {
			if !ekMatchesHeader(ek, s.hdr) {
				return nil, ErrErroneousDataReceived
			}
			s.ek = ek
			if ack {
				s.sendCt2()
			} else {
				s.dec, s.hdr = nil, nil
				s.kind = kEkReceivedCt1Sampled
			}
		} else if ack {
			s.enc = nil
			s.kind = kCt1Acknowledged
		}
	case kEkReceivedCt1Sampled:
		if m.typ == msgCt1Ack || m.typ == msgEkCt1Ack {
			s.sendCt2()
		}
	case kCt1Acknowledged:
		if m.typ == msgEk || m.typ == msgEkCt1Ack {
			s.dec.addChunk(&m.chunk)
			if ek, ok := s.dec.decodedMessage(); ok {
				if !ekMatchesHeader(ek, s.hdr) {
					return nil, ErrErroneousDataReceived
				}
				s.ek = ek
				s.sendCt2()
			}
		}
	case kKeysUnsampled, kHeaderReceived, kCt2Sampled:
		// nothing to do for a message of the current epoch
	default:
		return nil, ErrStateDecode
	}
	return nil, nil
}
