package protocol

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
)

// maxSenderKeyStates is how many chains one sender's record keeps for a
// distribution (a sender who rotates keys leaves the older ones here for
// late messages).
const maxSenderKeyStates = 5

// SenderKeyStore keeps sender-key records by sender device and
// distribution id. LoadSenderKey returns nil and no error when there is
// none. Records hold private keys (our own chains): store them as secrets.
type SenderKeyStore interface {
	LoadSenderKey(ctx context.Context, sender Address, distribution uuid.UUID) (*SenderKeyRecord, error)
	StoreSenderKey(ctx context.Context, sender Address, distribution uuid.UUID, r *SenderKeyRecord) error
}

type senderMessageKey struct {
	iteration uint32
	seed      []byte
}

// keys expands a sender message key's seed into the IV and AES key.
func (k senderMessageKey) keys() (iv, key []byte, err error) {
	okm, err := hkdf.Key(sha256.New, k.seed, nil, "WhisperGroup", 48)
	if err != nil {
		return nil, nil, err
	}
	return okm[:16], okm[16:], nil
}

type senderChainKey struct {
	iteration uint32
	seed      []byte
}

func (c senderChainKey) messageKey() senderMessageKey {
	return senderMessageKey{iteration: c.iteration, seed: hmacSHA256(c.seed, []byte{0x01})}
}

func (c senderChainKey) next() (senderChainKey, error) {
	if c.iteration == ^uint32(0) {
		return senderChainKey{}, fmt.Errorf("%w: sender chain is too long", ErrInvalidState)
	}
	return senderChainKey{iteration: c.iteration + 1, seed: hmacSHA256(c.seed, []byte{0x02})}, nil
}

// senderKeyState is one sender chain (libsignal's SenderKeyStateStructure).
type senderKeyState struct {
	version     uint32
	chainID     uint32
	chain       senderChainKey
	signingPub  PublicKey
	signingPriv *PrivateKey        // ours only
	skipped     []senderMessageKey // oldest first
}

// SenderKeyRecord holds the sender-key chains of one sender for one
// distribution (group), newest first.
type SenderKeyRecord struct {
	states []*senderKeyState
}

// String never shows the record: it holds chain keys and, for our own
// chains, the signing key.
func (r *SenderKeyRecord) String() string { return "SenderKeyRecord(redacted)" }

// GoString never shows the record (%#v).
func (r *SenderKeyRecord) GoString() string { return "protocol.SenderKeyRecord(redacted)" }

// ParseSenderKeyRecord reads a record made by Bytes
// (SenderKeyRecordStructure's layout).
func ParseSenderKeyRecord(b []byte) (*SenderKeyRecord, error) {
	r := &SenderKeyRecord{}
	err := walk(b, func(n protowire.Number, _ uint64, bs []byte, isBytes bool) error {
		if n != 1 || !isBytes {
			return nil
		}
		if len(r.states) >= maxSenderKeyStates {
			return fmt.Errorf("%w: too many sender key states", ErrInvalidState)
		}
		s, err := unmarshalSenderKeyState(bs)
		if err != nil {
			return err
		}
		r.states = append(r.states, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func unmarshalSenderKeyState(b []byte) (*senderKeyState, error) {
	s := &senderKeyState{}
	var pub, priv []byte
	var haveChain bool
	err := walk(b, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
		var err error
		switch {
		case n == 5 && !isBytes:
			s.version, err = u32(v, "sender key version")
		case n == 1 && !isBytes:
			s.chainID, err = u32(v, "chain id")
		case n == 2 && isBytes:
			haveChain = true
			err = walk(bs, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
				var err error
				switch {
				case n == 1 && !isBytes:
					s.chain.iteration, err = u32(v, "iteration")
				case n == 2 && isBytes:
					s.chain.seed = append([]byte(nil), bs...)
				}
				return err
			})
		case n == 3 && isBytes:
			err = walk(bs, func(n protowire.Number, _ uint64, bs []byte, isBytes bool) error {
				switch {
				case n == 1 && isBytes:
					pub = bs
				case n == 2 && isBytes:
					priv = bs
				}
				return nil
			})
		case n == 4 && isBytes:
			if len(s.skipped) >= MaxMessageKeys {
				return fmt.Errorf("%w: too many skipped sender keys", ErrInvalidState)
			}
			var k senderMessageKey
			err = walk(bs, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
				var err error
				switch {
				case n == 1 && !isBytes:
					k.iteration, err = u32(v, "iteration")
				case n == 2 && isBytes:
					k.seed = append([]byte(nil), bs...)
				}
				return err
			})
			s.skipped = append(s.skipped, k)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.version == 0 {
		s.version = SenderKeyVersion
	}
	if !haveChain || len(s.chain.seed) != 32 {
		return nil, fmt.Errorf("%w: sender key state without a chain key", ErrInvalidState)
	}
	if s.signingPub, err = ParsePublicKey(pub); err != nil {
		return nil, fmt.Errorf("%w: signing key: %v", ErrInvalidState, err)
	}
	if len(priv) > 0 {
		p, err := NewPrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("%w: signing key: %v", ErrInvalidState, err)
		}
		s.signingPriv = &p
	}
	return s, nil
}

func (s *senderKeyState) marshal() []byte {
	var b []byte
	b = appendNonZero(b, 1, uint64(s.chainID))
	var c []byte
	c = appendNonZero(c, 1, uint64(s.chain.iteration))
	c = appendNonEmpty(c, 2, s.chain.seed)
	b = appendBytesField(b, 2, c)
	var k []byte
	k = appendNonEmpty(k, 1, s.signingPub.Bytes())
	if s.signingPriv != nil {
		k = appendNonEmpty(k, 2, s.signingPriv.Bytes())
	}
	b = appendBytesField(b, 3, k)
	for _, m := range s.skipped {
		var e []byte
		e = appendNonZero(e, 1, uint64(m.iteration))
		e = appendNonEmpty(e, 2, m.seed)
		b = appendBytesField(b, 4, e)
	}
	return appendNonZero(b, 5, uint64(s.version))
}

// Bytes encodes the record for storage.
func (r *SenderKeyRecord) Bytes() []byte {
	var b []byte
	for _, s := range r.states {
		b = appendBytesField(b, 1, s.marshal())
	}
	return b
}

func (r *SenderKeyRecord) clone() (*SenderKeyRecord, error) { return ParseSenderKeyRecord(r.Bytes()) }

// addState adds a chain (or moves an existing one with the same id and
// signing key to the front), dropping others with that chain id and the
// oldest beyond the limit.
func (r *SenderKeyRecord) addState(s *senderKeyState) {
	var existing *senderKeyState
	kept := r.states[:0:0]
	for _, o := range r.states {
		if o.chainID == s.chainID {
			if existing == nil && o.signingPub.Equal(s.signingPub) {
				existing = o
			}
			continue
		}
		kept = append(kept, o)
	}
	if existing != nil {
		s = existing
	}
	if len(kept) >= maxSenderKeyStates {
		kept = kept[:maxSenderKeyStates-1]
	}
	r.states = append([]*senderKeyState{s}, kept...)
}

// HasChain reports whether the record holds the chain a group message
// names: how a receiver that keeps records per group finds the group.
func (r *SenderKeyRecord) HasChain(chainID uint32) bool {
	return r != nil && r.stateFor(chainID) != nil
}

func (r *SenderKeyRecord) stateFor(chainID uint32) *senderKeyState {
	for _, s := range r.states {
		if s.chainID == chainID {
			return s
		}
	}
	return nil
}

// CreateSenderKeyDistributionMessage returns the distribution message for
// our own chain in a distribution, creating the chain (random chain key,
// signing key and 31-bit chain id) the first time. Send it to each member
// inside the pairwise sessions. To start a new chain (after a member left),
// delete the record first.
func CreateSenderKeyDistributionMessage(ctx context.Context, rand io.Reader, store SenderKeyStore, sender Address, distribution uuid.UUID) (*SenderKeyDistributionMessage, error) {
	record, err := store.LoadSenderKey(ctx, sender, distribution)
	if err != nil {
		return nil, fmt.Errorf("load sender key: %w", err)
	}
	if record == nil || len(record.states) == 0 {
		var raw [4 + 32]byte
		if _, err := io.ReadFull(rand, raw[:]); err != nil {
			return nil, fmt.Errorf("create sender key: %w", err)
		}
		signing, err := GenerateKeyPair(rand)
		if err != nil {
			return nil, err
		}
		priv := signing.Private
		record = &SenderKeyRecord{}
		record.addState(&senderKeyState{
			version:     SenderKeyVersion,
			chainID:     binary.BigEndian.Uint32(raw[:4]) >> 1,
			chain:       senderChainKey{iteration: 0, seed: append([]byte(nil), raw[4:]...)},
			signingPub:  signing.Public,
			signingPriv: &priv,
		})
		if err := store.StoreSenderKey(ctx, sender, distribution, record); err != nil {
			return nil, fmt.Errorf("store sender key: %w", err)
		}
	}
	s := record.states[0]
	return newSenderKeyDistributionMessage(distribution, s.chainID, s.chain.iteration, s.chain.seed, s.signingPub), nil
}

// ProcessSenderKeyDistributionMessage stores a member's chain so their
// group messages can be decrypted.
func ProcessSenderKeyDistributionMessage(ctx context.Context, store SenderKeyStore, sender Address, m *SenderKeyDistributionMessage) error {
	record, err := store.LoadSenderKey(ctx, sender, m.DistributionID)
	if err != nil {
		return fmt.Errorf("load sender key: %w", err)
	}
	if record == nil {
		record = &SenderKeyRecord{}
	}
	record.addState(&senderKeyState{
		version:    uint32(m.Version),
		chainID:    m.ChainID,
		chain:      senderChainKey{iteration: m.Iteration, seed: append([]byte(nil), m.ChainKey...)},
		signingPub: m.SigningKey,
	})
	if err := store.StoreSenderKey(ctx, sender, m.DistributionID, record); err != nil {
		return fmt.Errorf("store sender key: %w", err)
	}
	return nil
}

// GroupEncrypt encrypts plaintext with our chain for a distribution and
// signs it; every member who holds our distribution message can decrypt.
func GroupEncrypt(ctx context.Context, rand io.Reader, store SenderKeyStore, sender Address, distribution uuid.UUID, plaintext []byte) (*SenderKeyMessage, error) {
	record, err := store.LoadSenderKey(ctx, sender, distribution)
	if err != nil {
		return nil, fmt.Errorf("load sender key: %w", err)
	}
	if record == nil || len(record.states) == 0 {
		return nil, fmt.Errorf("%w for distribution %s", ErrNoSenderKey, distribution)
	}
	if record, err = record.clone(); err != nil {
		return nil, err
	}
	s := record.states[0]
	if s.signingPriv == nil {
		return nil, fmt.Errorf("%w: the sender key for %s is not ours", ErrInvalidState, distribution)
	}
	iv, key, err := s.chain.messageKey().keys()
	if err != nil {
		return nil, err
	}
	ct := cbcEncrypt(key, iv, plaintext)
	b := []byte{versionByte(byte(s.version), SenderKeyVersion)}
	b = appendBytesField(b, 1, distribution[:])
	b = appendVarintField(b, 2, s.chainID)
	b = appendVarintField(b, 3, s.chain.iteration)
	b = appendBytesField(b, 4, ct)
	sig, err := s.signingPriv.Sign(rand, b)
	if err != nil {
		return nil, err
	}
	msg := &SenderKeyMessage{Version: byte(s.version), DistributionID: distribution, ChainID: s.chainID,
		Iteration: s.chain.iteration, Ciphertext: ct, serialized: append(b, sig...)}
	if s.chain, err = s.chain.next(); err != nil {
		return nil, err
	}
	if err := store.StoreSenderKey(ctx, sender, distribution, record); err != nil {
		return nil, fmt.Errorf("store sender key: %w", err)
	}
	return msg, nil
}

// GroupDecrypt checks and decrypts a SenderKeyMessage from sender. Errors:
// ErrInvalidMessage (malformed or undecryptable), ErrNoSenderKey (no
// distribution message from this sender for this chain yet),
// ErrInvalidSignature, ErrDuplicateMessage. Nothing changes on error.
func GroupDecrypt(ctx context.Context, store SenderKeyStore, sender Address, body []byte) ([]byte, error) {
	m, err := ParseSenderKeyMessage(body)
	if err != nil {
		return nil, err
	}
	record, err := store.LoadSenderKey(ctx, sender, m.DistributionID)
	if err != nil {
		return nil, fmt.Errorf("load sender key: %w", err)
	}
	if record == nil {
		return nil, fmt.Errorf("%w: none from %s for distribution %s", ErrNoSenderKey, sender, m.DistributionID)
	}
	if record, err = record.clone(); err != nil {
		return nil, err
	}
	s := record.stateFor(m.ChainID)
	if s == nil {
		return nil, fmt.Errorf("%w: no chain %d from %s for distribution %s", ErrNoSenderKey, m.ChainID, sender, m.DistributionID)
	}
	if uint32(m.Version) != s.version {
		return nil, fmt.Errorf("%w: sender key message version %d, chain version %d", ErrInvalidMessage, m.Version, s.version)
	}
	if !s.signingPub.Verify(m.serialized[len(m.serialized)-SignatureSize:], m.serialized[:len(m.serialized)-SignatureSize]) {
		return nil, fmt.Errorf("%w: group message from %s", ErrInvalidSignature, sender)
	}
	key, err := senderKeyFor(s, m.Iteration)
	if err != nil {
		return nil, err
	}
	iv, aesKey, err := key.keys()
	if err != nil {
		return nil, err
	}
	pt, err := cbcDecrypt(aesKey, iv, m.Ciphertext)
	if err != nil {
		return nil, err
	}
	if err := store.StoreSenderKey(ctx, sender, m.DistributionID, record); err != nil {
		return nil, fmt.Errorf("store sender key: %w", err)
	}
	return pt, nil
}

// senderKeyFor finds the message key for an iteration, advancing the chain
// (and keeping skipped keys) when it is ahead.
func senderKeyFor(s *senderKeyState, iteration uint32) (senderMessageKey, error) {
	if s.chain.iteration > iteration {
		for i, k := range s.skipped {
			if k.iteration == iteration {
				s.skipped = append(s.skipped[:i:i], s.skipped[i+1:]...)
				return k, nil
			}
		}
		return senderMessageKey{}, fmt.Errorf("%w: iteration %d (chain at %d)", ErrDuplicateMessage, iteration, s.chain.iteration)
	}
	if iteration-s.chain.iteration > MaxForwardJumps {
		return senderMessageKey{}, fmt.Errorf("%w: group message from too far in the future", ErrInvalidMessage)
	}
	c := s.chain
	var err error
	for c.iteration < iteration {
		if iteration-c.iteration <= MaxMessageKeys {
			s.skipped = append(s.skipped, c.messageKey())
		}
		if c, err = c.next(); err != nil {
			return senderMessageKey{}, err
		}
	}
	if len(s.skipped) > MaxMessageKeys {
		s.skipped = append([]senderMessageKey(nil), s.skipped[len(s.skipped)-MaxMessageKeys:]...)
	}
	key := c.messageKey()
	if s.chain, err = c.next(); err != nil {
		return senderMessageKey{}, err
	}
	return key, nil
}
