// Package spqr implements Signal's Sparse Post-Quantum Ratchet (SPQR):
// the "ML-KEM Braid" V1 sparse continuous key agreement over ML-KEM-768 and
// the symmetric chain that turns its epoch secrets into per-message keys.
//
// It is byte-compatible with the Rust crate signalapp/SparsePostQuantumRatchet
// v1.5.3, which libsignal 0.103 runs in every Signal session with
// min_version V1. Each SignalMessage carries the bytes returned by Send in
// its pq_ratchet field (field 5); the receiver hands them to Recv, and both
// mix the returned message key into the double ratchet's message keys.
//
// States and messages are opaque byte slices. A state is used once: every
// Send and Recv returns the state to store in its place, and on error the
// previous state stays valid and unchanged. States use the crate's
// protobuf layout (PqRatchetState) but hold the ML-KEM decapsulation key
// in seed form, so they are meant to be read back by this package only.
//
// Version negotiation follows the crate with version = min_version = V1:
// a message that is empty or starts with version byte 0 (an SPQR-less
// peer) is refused with ErrMinimumVersion while the state is still
// negotiating (before the first successful Recv) and with
// ErrVersionMismatch afterwards; a message whose version byte is above 1
// is ignored (Recv returns the state unchanged and no key).
package spqr

import (
	"errors"
	"fmt"
	"io"
)

// Direction says which side of the session a state belongs to.
type Direction int

const (
	// A2B is the session initiator ("Alice"), which sends the first
	// encapsulation key.
	A2B Direction = 0
	// B2A is the responder.
	B2A Direction = 1
)

func (d Direction) other() Direction {
	if d == A2B {
		return B2A
	}
	return A2B
}

// String returns "A2B" or "B2A".
func (d Direction) String() string {
	switch d {
	case A2B:
		return "A2B"
	case B2A:
		return "B2A"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Params configures a new state.
type Params struct {
	// AuthKey is the shared secret both parties derive at session setup;
	// it keys the authenticator and the initial chain.
	AuthKey []byte
	// Direction is A2B for the session initiator and B2A for the responder.
	Direction Direction
	// MaxJump bounds how far ahead of the receive counter a message key
	// index may be (libsignal: MAX_FORWARD_JUMPS = 25000); 0 means the
	// crate's default, 25000.
	MaxJump uint32
	// MaxOOOKeys is how many skipped keys are kept for out-of-order
	// messages (libsignal: MAX_MESSAGE_KEYS = 2000); 0 means the crate's
	// default, 2000.
	MaxOOOKeys uint32
}

// Errors returned by this package; they mirror the crate's Error variants
// and are wrapped with details where the crate carries numbers.
var (
	// ErrStateDecode: the state bytes are not a valid state.
	ErrStateDecode = errors.New("spqr: state decode failed")
	// ErrMsgDecode: the message bytes are malformed.
	ErrMsgDecode = errors.New("spqr: message decode failed")
	// ErrMACVerifyFailed: a header or ciphertext MAC did not verify.
	ErrMACVerifyFailed = errors.New("spqr: MAC verification failed")
	// ErrEpochOutOfRange: the message's epoch is not one the state can use.
	ErrEpochOutOfRange = errors.New("spqr: epoch not in valid range")
	// ErrVersionMismatch: a lower-version message after negotiation ended.
	ErrVersionMismatch = errors.New("spqr: version mismatch after negotiation")
	// ErrMinimumVersion: a message below the minimum version (V1).
	ErrMinimumVersion = errors.New("spqr: message below minimum version")
	// ErrKeyJump: the message key index is too far ahead (MaxJump).
	ErrKeyJump = errors.New("spqr: key jump too large")
	// ErrKeyTrimmed: the message key is too old and was discarded.
	ErrKeyTrimmed = errors.New("spqr: key trimmed")
	// ErrKeyAlreadyRequested: the message key was already used (a
	// duplicate message).
	ErrKeyAlreadyRequested = errors.New("spqr: key already requested")
	// ErrErroneousDataReceived: the received encapsulation key does not
	// match its authenticated header.
	ErrErroneousDataReceived = errors.New("spqr: erroneous data received from remote party")
	// ErrSendKeyEpochDecreased: internal inconsistency of the send chain.
	ErrSendKeyEpochDecreased = errors.New("spqr: send key epoch decreased")
	// ErrChainNotAvailable: the state has no usable chain.
	ErrChainNotAvailable = errors.New("spqr: chain not available")
	// ErrInvalidParams: Params are invalid.
	ErrInvalidParams = errors.New("spqr: invalid params")
)

func storedParam(v, def uint32) uint32 {
	if v == def {
		return 0
	}
	return v
}

// InitialState returns a fresh V1 state (version and minimum version V1)
// for one side of a session.
func InitialState(p Params) ([]byte, error) {
	if p.Direction != A2B && p.Direction != B2A {
		return nil, fmt.Errorf("%w: direction", ErrInvalidParams)
	}
	st := &state{
		vn: &versionNegotiation{
			authKey:    append([]byte(nil), p.AuthKey...),
			direction:  p.Direction,
			minVersion: versionV1,
			params: &chainParams{
				maxJump:    storedParam(p.MaxJump, defaultMaxJump),
				maxOOOKeys: storedParam(p.MaxOOOKeys, defaultMaxOOOKeys),
			},
		},
	}
	if p.Direction == A2B {
		st.v1 = initA(p.AuthKey)
	} else {
		st.v1 = initB(p.AuthKey)
	}
	return st.marshal(), nil
}

func chainFromVN(vn *versionNegotiation) (*chain, error) {
	if vn.params == nil {
		return nil, ErrChainNotAvailable
	}
	return newChain(vn.authKey, vn.direction, *vn.params), nil
}

// Send produces the SPQR message to attach to the next outgoing message and
// the message key to mix into it. key is nil when the crate returns None
// (not for states made by InitialState, which always have a chain). rand
// supplies the ML-KEM randomness (64 bytes at key generation, 32 at
// encapsulation). An empty state (the crate's V0 "disabled" state) yields
// an empty state and message and no key.
func Send(stateBytes []byte, rand io.Reader) (newState, key, msg []byte, err error) {
	st, err := parseState(stateBytes)
	if err != nil {
		return nil, nil, nil, err
	}
	if st.v1 == nil {
		return nil, nil, nil, nil
	}
	m, secret, err := st.v1.send(rand)
	if err != nil {
		return nil, nil, nil, err
	}
	ch := st.chain
	if ch == nil {
		if st.vn == nil {
			return nil, nil, nil, ErrChainNotAvailable
		}
		if st.vn.minVersion > versionV0 {
			if ch, err = chainFromVN(st.vn); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	var index uint32
	if ch != nil {
		if secret != nil {
			if err := ch.addEpoch(secret.epoch, secret.secret); err != nil {
				return nil, nil, nil, err
			}
		}
		if index, key, err = ch.sendKey(m.epoch - 1); err != nil {
			return nil, nil, nil, err
		}
	} else if secret != nil {
		return nil, nil, nil, ErrChainNotAvailable
	}
	st.chain = ch
	return st.marshal(), key, m.serialize(index), nil
}

// Recv processes the SPQR message of an incoming message and returns the
// message key it was sent with (nil when the crate returns None: a message
// without key, i.e. from a peer without a chain, or an ignored message).
// Duplicate messages are refused with ErrKeyAlreadyRequested, and keys
// older than MaxOOOKeys with ErrKeyTrimmed.
func Recv(stateBytes, msg []byte) (newState, key []byte, err error) {
	st, err := parseState(stateBytes)
	if err != nil {
		return nil, nil, err
	}
	var v uint64
	switch {
	case len(msg) == 0:
		v = versionV0
	case msg[0] <= versionV1:
		v = uint64(msg[0])
	default:
		// A version we do not know: ignore it and keep our state.
		return append([]byte(nil), stateBytes...), nil, nil
	}
	stVersion := uint64(versionV0)
	if st.v1 != nil {
		stVersion = versionV1
	}
	if v < stVersion {
		if st.vn == nil {
			return nil, nil, ErrVersionMismatch
		}
		if v < st.vn.minVersion {
			return nil, nil, ErrMinimumVersion
		}
		// Negotiating down to V0: the crate then returns an empty state.
		return nil, nil, nil
	}
	if st.v1 == nil {
		return nil, nil, nil
	}
	m, index, err := deserializeMessage(msg)
	if err != nil {
		return nil, nil, err
	}
	secret, err := st.v1.recv(m)
	if err != nil {
		return nil, nil, err
	}
	ch := st.chain
	if ch == nil {
		if st.vn == nil {
			return nil, nil, ErrChainNotAvailable
		}
		if ch, err = chainFromVN(st.vn); err != nil {
			return nil, nil, err
		}
	}
	if secret != nil {
		if err := ch.addEpoch(secret.epoch, secret.secret); err != nil {
			return nil, nil, err
		}
	}
	if !(m.epoch == 1 && index == 0) {
		if key, err = ch.recvKey(m.epoch-1, index); err != nil {
			return nil, nil, err
		}
	}
	st.chain = ch
	st.vn = nil
	return st.marshal(), key, nil
}
