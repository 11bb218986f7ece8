package protocol

import (
	"crypto/subtle"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// MaxUnacknowledgedSessionAge is how long a session we started may go
// without an answer before we stop sending on it and build a new one.
const MaxUnacknowledgedSessionAge = 30 * 24 * time.Hour

type skippedKey struct {
	index uint32
	seed  []byte
}

type receiverChain struct {
	ratchetKey PublicKey
	chain      chainKey
	skipped    []skippedKey // newest first
}

type senderChain struct {
	ratchet KeyPair
	chain   chainKey
}

type pendingPreKey struct {
	preKeyID       *uint32
	signedPreKeyID uint32
	baseKey        PublicKey
	timestamp      uint64 // unix seconds
}

type pendingKyberPreKey struct {
	id         uint32
	ciphertext []byte
}

// sessionState is one Double Ratchet session with SPQR; the layout follows
// libsignal's SessionStructure.
type sessionState struct {
	version         uint32
	localIdentity   PublicKey
	remoteIdentity  PublicKey
	rootKey         [32]byte
	previousCounter uint32
	sender          *senderChain
	receivers       []receiverChain // newest last
	pending         *pendingPreKey
	pendingKyber    *pendingKyberPreKey
	remoteRegID     uint32
	localRegID      uint32
	aliceBaseKey    []byte
	pqRatchetState  []byte
}

func (s *sessionState) receiverIndex(key PublicKey) int {
	for i := range s.receivers {
		if s.receivers[i].ratchetKey.Equal(key) {
			return i
		}
	}
	return -1
}

// usable reports whether we may send on this session at now.
func (s *sessionState) usable(now time.Time) bool {
	if s.sender == nil || s.version != CurrentVersion || len(s.pqRatchetState) == 0 {
		return false
	}
	if s.pending != nil {
		created := time.Unix(int64(s.pending.timestamp), 0)
		if created.Add(MaxUnacknowledgedSessionAge).Before(now) {
			return false
		}
	}
	return true
}

func (s *sessionState) baseKeyMatches(version uint32, base []byte) bool {
	return s.version == version && len(s.aliceBaseKey) == len(base) &&
		subtle.ConstantTimeCompare(s.aliceBaseKey, base) == 1
}

// marshal encodes the state in SessionStructure's layout.
func (s *sessionState) marshal() []byte {
	var b []byte
	b = appendNonZero(b, 1, uint64(s.version))
	b = appendNonEmpty(b, 2, s.localIdentity.Bytes())
	b = appendNonEmpty(b, 3, s.remoteIdentity.Bytes())
	b = appendNonEmpty(b, 4, s.rootKey[:])
	b = appendNonZero(b, 5, uint64(s.previousCounter))
	if s.sender != nil {
		var c []byte
		c = appendNonEmpty(c, 1, s.sender.ratchet.Public.Bytes())
		c = appendNonEmpty(c, 2, s.sender.ratchet.Private.Bytes())
		c = appendBytesField(c, 3, marshalChainKey(s.sender.chain))
		b = appendBytesField(b, 6, c)
	}
	for _, r := range s.receivers {
		var c []byte
		c = appendNonEmpty(c, 1, r.ratchetKey.Bytes())
		c = appendBytesField(c, 3, marshalChainKey(r.chain))
		for _, k := range r.skipped {
			var m []byte
			m = appendNonZero(m, 1, uint64(k.index))
			m = appendNonEmpty(m, 5, k.seed)
			c = appendBytesField(c, 4, m)
		}
		b = appendBytesField(b, 7, c)
	}
	if p := s.pending; p != nil {
		var m []byte
		if p.preKeyID != nil {
			m = protowire.AppendTag(m, 1, protowire.VarintType)
			m = protowire.AppendVarint(m, uint64(*p.preKeyID))
		}
		m = appendNonEmpty(m, 2, p.baseKey.Bytes())
		m = appendNonZero(m, 3, uint64(p.signedPreKeyID))
		m = appendNonZero(m, 4, p.timestamp)
		b = appendBytesField(b, 9, m)
	}
	b = appendNonZero(b, 10, uint64(s.remoteRegID))
	b = appendNonZero(b, 11, uint64(s.localRegID))
	b = appendNonEmpty(b, 13, s.aliceBaseKey)
	if k := s.pendingKyber; k != nil {
		var m []byte
		m = appendNonZero(m, 1, uint64(k.id))
		m = appendNonEmpty(m, 2, k.ciphertext)
		b = appendBytesField(b, 14, m)
	}
	b = appendNonEmpty(b, 15, s.pqRatchetState)
	return b
}

func marshalChainKey(c chainKey) []byte {
	var b []byte
	b = appendNonZero(b, 1, uint64(c.index))
	return appendNonEmpty(b, 2, c.key[:])
}

func unmarshalChainKey(b []byte) (chainKey, error) {
	var c chainKey
	var haveKey bool
	err := walk(b, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
		var err error
		switch {
		case n == 1 && !isBytes:
			c.index, err = u32(v, "chain index")
		case n == 2 && isBytes:
			haveKey = true
			err = copyKey32(&c.key, bs, "chain key")
		}
		return err
	})
	if err == nil && !haveKey {
		err = fmt.Errorf("%w: chain without a key", ErrInvalidState)
	}
	return c, err
}

// unmarshalChain reads a Chain: for a sender chain the private key is
// required, for a receiver chain it is absent.
func unmarshalChain(b []byte, sending bool) (*senderChain, *receiverChain, error) {
	var pub, priv, ck []byte
	var skipped []skippedKey
	err := walk(b, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
		if !isBytes {
			return nil
		}
		switch n {
		case 1:
			pub = bs
		case 2:
			priv = bs
		case 3:
			ck = bs
		case 4:
			if sending {
				return nil
			}
			if len(skipped) >= MaxMessageKeys {
				return fmt.Errorf("%w: too many skipped keys", ErrInvalidState)
			}
			var k skippedKey
			err := walk(bs, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
				var err error
				switch {
				case n == 1 && !isBytes:
					k.index, err = u32(v, "message key index")
				case n == 5 && isBytes:
					k.seed = append([]byte(nil), bs...)
				}
				return err
			})
			if err != nil {
				return err
			}
			if len(k.seed) != 32 {
				return fmt.Errorf("%w: skipped message key without a seed", ErrInvalidState)
			}
			skipped = append(skipped, k)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	key, err := ParsePublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: chain ratchet key: %v", ErrInvalidState, err)
	}
	c, err := unmarshalChainKey(ck)
	if err != nil {
		return nil, nil, err
	}
	if sending {
		// The public key is taken as stored, not derived again: records are
		// read on every operation and the derivation would dominate.
		p, err := NewPrivateKey(priv)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: sender chain private key: %v", ErrInvalidState, err)
		}
		return &senderChain{ratchet: KeyPair{Public: key, Private: p}, chain: c}, nil, nil
	}
	return nil, &receiverChain{ratchetKey: key, chain: c, skipped: skipped}, nil
}

// unmarshalSessionState reads a SessionStructure.
func unmarshalSessionState(b []byte) (*sessionState, error) {
	s := &sessionState{}
	var local, remote, root []byte
	err := walk(b, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
		var err error
		switch {
		case n == 1 && !isBytes:
			s.version, err = u32(v, "session version")
		case n == 2 && isBytes:
			local = bs
		case n == 3 && isBytes:
			remote = bs
		case n == 4 && isBytes:
			root = bs
		case n == 5 && !isBytes:
			s.previousCounter, err = u32(v, "previous counter")
		case n == 6 && isBytes:
			s.sender, _, err = unmarshalChain(bs, true)
		case n == 7 && isBytes:
			if len(s.receivers) >= maxReceiverChains {
				return fmt.Errorf("%w: too many receiver chains", ErrInvalidState)
			}
			var r *receiverChain
			if _, r, err = unmarshalChain(bs, false); err == nil {
				s.receivers = append(s.receivers, *r)
			}
		case n == 9 && isBytes:
			p := &pendingPreKey{}
			err = walk(bs, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
				var err error
				switch {
				case n == 1 && !isBytes:
					var id uint32
					id, err = u32(v, "prekey id")
					p.preKeyID = &id
				case n == 2 && isBytes:
					if p.baseKey, err = ParsePublicKey(bs); err != nil {
						err = fmt.Errorf("%w: pending base key: %v", ErrInvalidState, err)
					}
				case n == 3 && !isBytes:
					p.signedPreKeyID, err = u32(v, "signed prekey id")
				case n == 4 && !isBytes:
					p.timestamp = v
				}
				return err
			})
			s.pending = p
		case n == 10 && !isBytes:
			s.remoteRegID, err = u32(v, "registration id")
		case n == 11 && !isBytes:
			s.localRegID, err = u32(v, "registration id")
		case n == 13 && isBytes:
			s.aliceBaseKey = append([]byte(nil), bs...)
		case n == 14 && isBytes:
			k := &pendingKyberPreKey{}
			err = walk(bs, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
				var err error
				switch {
				case n == 1 && !isBytes:
					k.id, err = u32(v, "kyber prekey id")
				case n == 2 && isBytes:
					k.ciphertext = append([]byte(nil), bs...)
				}
				return err
			})
			s.pendingKyber = k
		case n == 15 && isBytes:
			s.pqRatchetState = append([]byte(nil), bs...)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.localIdentity, err = ParsePublicKey(local); err != nil {
		return nil, fmt.Errorf("%w: local identity: %v", ErrInvalidState, err)
	}
	if s.remoteIdentity, err = ParsePublicKey(remote); err != nil {
		return nil, fmt.Errorf("%w: remote identity: %v", ErrInvalidState, err)
	}
	if err := copyKey32(&s.rootKey, root, "root key"); err != nil {
		return nil, err
	}
	return s, nil
}

// clone is a deep copy, made by a round trip through the encoding, so a
// trial decryption can never touch the state it was copied from.
func (s *sessionState) clone() (*sessionState, error) { return unmarshalSessionState(s.marshal()) }

// SessionRecord holds the sessions with one remote device: the current one
// and up to 40 earlier ones, which still decrypt late messages.
type SessionRecord struct {
	current  *sessionState
	previous [][]byte // encoded states, newest first
}

// String never shows the record: it holds root, chain and private keys.
func (r *SessionRecord) String() string { return "SessionRecord(redacted)" }

// GoString never shows the record (%#v).
func (r *SessionRecord) GoString() string { return "protocol.SessionRecord(redacted)" }

// NewSessionRecord is an empty record.
func NewSessionRecord() *SessionRecord { return &SessionRecord{} }

// ParseSessionRecord reads a record made by Bytes (libsignal's
// RecordStructure layout). Records of another format or of an earlier
// protocol version are refused with ErrInvalidState or ErrLegacyMessage.
func ParseSessionRecord(b []byte) (*SessionRecord, error) {
	r := &SessionRecord{}
	err := walk(b, func(n protowire.Number, v uint64, bs []byte, isBytes bool) error {
		if !isBytes {
			return nil
		}
		switch n {
		case 1:
			s, err := unmarshalSessionState(bs)
			if err != nil {
				return err
			}
			r.current = s
		case 2:
			if len(r.previous) >= maxArchivedStates {
				return fmt.Errorf("%w: too many archived sessions", ErrInvalidState)
			}
			r.previous = append(r.previous, append([]byte(nil), bs...))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.current != nil && r.current.version != CurrentVersion {
		return nil, fmt.Errorf("%w: session version %d", ErrLegacyMessage, r.current.version)
	}
	return r, nil
}

// Bytes encodes the record for storage. It holds private keys: store it
// as secret.
func (r *SessionRecord) Bytes() []byte {
	var b []byte
	if r.current != nil {
		b = appendBytesField(b, 1, r.current.marshal())
	}
	for _, p := range r.previous {
		b = appendBytesField(b, 2, p)
	}
	return b
}

// HasCurrentSession reports whether the record has a session to send on
// at now: established (or recently started) PQXDH with SPQR.
func (r *SessionRecord) HasCurrentSession(now time.Time) bool {
	return r != nil && r.current != nil && r.current.usable(now)
}

// RemoteRegistrationID is the remote device's registration id, or 0.
func (r *SessionRecord) RemoteRegistrationID() uint32 {
	if r == nil || r.current == nil {
		return 0
	}
	return r.current.remoteRegID
}

// RemoteIdentity is the identity key the current session was built with.
func (r *SessionRecord) RemoteIdentity() (PublicKey, bool) {
	if r == nil || r.current == nil {
		return PublicKey{}, false
	}
	return r.current.remoteIdentity, true
}

// Version is the current session's protocol version, or 0.
func (r *SessionRecord) Version() int {
	if r == nil || r.current == nil {
		return 0
	}
	return int(r.current.version)
}

// ArchiveCurrentState moves the current session to the archive, so the
// next send builds a new one (after the remote reinstalled, say).
func (r *SessionRecord) ArchiveCurrentState() {
	if r.current == nil {
		return
	}
	r.current.pending = nil
	r.current.pendingKyber = nil
	r.previous = append([][]byte{r.current.marshal()}, r.previous...)
	if len(r.previous) > maxArchivedStates {
		r.previous = r.previous[:maxArchivedStates]
	}
	r.current = nil
}

// promoteState makes s current, archiving the old current session.
func (r *SessionRecord) promoteState(s *sessionState) {
	r.ArchiveCurrentState()
	r.current = s
}

// promoteMatching makes current the session started by the given base key,
// if there is one, and reports whether there was.
func (r *SessionRecord) promoteMatching(version uint32, base []byte) (bool, error) {
	if r.current != nil && r.current.baseKeyMatches(version, base) {
		return true, nil
	}
	for i, p := range r.previous {
		s, err := unmarshalSessionState(p)
		if err != nil {
			return false, err
		}
		if s.baseKeyMatches(version, base) {
			r.removePrevious(i)
			r.promoteState(s)
			return true, nil
		}
	}
	return false, nil
}

func (r *SessionRecord) removePrevious(i int) {
	r.previous = append(r.previous[:i:i], r.previous[i+1:]...)
}
