package protocol

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/parleyhq/parley/protocol/spqr"
)

// Direction says whether an identity is checked for sending or receiving.
type Direction int

// Directions.
const (
	Sending Direction = iota + 1
	Receiving
)

// IdentityStore holds our identity and what we know of others'.
type IdentityStore interface {
	// IdentityKeyPair is our identity.
	IdentityKeyPair(ctx context.Context) (IdentityKeyPair, error)
	// LocalRegistrationID is this device's registration id.
	LocalRegistrationID(ctx context.Context) (uint32, error)
	// IsTrustedIdentity decides whether key may be used with addr.
	IsTrustedIdentity(ctx context.Context, addr Address, key PublicKey, dir Direction) (bool, error)
	// SaveIdentity records key as addr's identity.
	SaveIdentity(ctx context.Context, addr Address, key PublicKey) error
}

// SessionStore keeps session records. LoadSession returns nil and no error
// when there is none. Records hold private keys: store them as secrets.
type SessionStore interface {
	LoadSession(ctx context.Context, addr Address) (*SessionRecord, error)
	StoreSession(ctx context.Context, addr Address, r *SessionRecord) error
}

// PreKeyStore keeps one-time EC prekeys. LoadPreKey returns an error
// wrapping ErrNoPreKey for an unknown id.
type PreKeyStore interface {
	LoadPreKey(ctx context.Context, id uint32) (PreKeyRecord, error)
	RemovePreKey(ctx context.Context, id uint32) error
}

// SignedPreKeyStore keeps signed EC prekeys (ErrNoPreKey for an unknown id).
type SignedPreKeyStore interface {
	LoadSignedPreKey(ctx context.Context, id uint32) (SignedPreKeyRecord, error)
}

// KyberPreKeyStore keeps Kyber prekeys (ErrNoPreKey for an unknown id).
// MarkKyberPreKeyUsed is called after a session was built with one: a
// one-time key must be deleted; a last-resort key is kept, and the store
// must remember the signed prekey id and base key it was used with and
// return an error wrapping ErrPreKeyReused when they come again (a
// replayed PreKey message), as Signal's clients do.
type KyberPreKeyStore interface {
	LoadKyberPreKey(ctx context.Context, id uint32) (KyberPreKeyRecord, error)
	MarkKyberPreKeyUsed(ctx context.Context, id, signedPreKeyID uint32, baseKey PublicKey) error
}

// Store is everything one device needs to encrypt and decrypt one-to-one.
type Store interface {
	IdentityStore
	SessionStore
	PreKeyStore
	SignedPreKeyStore
	KyberPreKeyStore
}

// pqxdhLabel is the KDF info of PQXDH with Curve25519, SHA-256 and Kyber1024.
const pqxdhLabel = "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"

// handshakeKeys are PQXDH's outputs: the first root and chain keys and the
// key that authenticates the post-quantum ratchet.
type handshakeKeys struct {
	root   [32]byte
	chain  chainKey
	pqrKey []byte
}

func deriveHandshake(secrets []byte) (handshakeKeys, error) {
	okm, err := hkdf.Key(sha256.New, secrets, nil, pqxdhLabel, 96)
	if err != nil {
		return handshakeKeys{}, err
	}
	var k handshakeKeys
	copy(k.root[:], okm[:32])
	copy(k.chain.key[:], okm[32:64])
	k.pqrKey = okm[64:96]
	return k, nil
}

// localIdentity loads our identity and registration id.
func localIdentity(ctx context.Context, store IdentityStore) (IdentityKeyPair, uint32, error) {
	ours, err := store.IdentityKeyPair(ctx)
	if err != nil {
		return IdentityKeyPair{}, 0, fmt.Errorf("load identity: %w", err)
	}
	regID, err := store.LocalRegistrationID(ctx)
	if err != nil {
		return IdentityKeyPair{}, 0, fmt.Errorf("load registration id: %w", err)
	}
	return ours, regID, nil
}

// agreement is one of PQXDH's Diffie-Hellman computations.
type agreement struct {
	priv PrivateKey
	pub  PublicKey
}

// agreeAll is PQXDH's input before the KEM secret: 32 bytes of 0xFF (the
// discontinuity bytes) and each agreement's shared secret in order.
func agreeAll(dhs []agreement) ([]byte, error) {
	secrets := bytes.Repeat([]byte{0xFF}, 32)
	for _, dh := range dhs {
		s, err := dh.priv.Agree(dh.pub)
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, s...)
	}
	return secrets, nil
}

// sameAccount says whether a session is with another device of our own
// account (a "note to self" session), which lifts the forward-jump limit:
// the same identity key and the same service id, as libsignal decides it.
func sameAccount(local, remote Address, ourIdentity, theirIdentity PublicKey) bool {
	if !ourIdentity.Equal(theirIdentity) {
		return false
	}
	a, ok1 := serviceIDBinary(local.Name)
	b, ok2 := serviceIDBinary(remote.Name)
	return ok1 && ok2 && bytes.Equal(a, b)
}

func pqrParams(authKey []byte, dir spqr.Direction, self bool) spqr.Params {
	jump := uint32(MaxForwardJumps)
	if self {
		jump = math.MaxUint32
	}
	return spqr.Params{AuthKey: authKey, Direction: dir, MaxJump: jump, MaxOOOKeys: MaxMessageKeys}
}

// ProcessPreKeyBundle starts a session with a remote device from its
// bundle (PQXDH as the initiator). The next Encrypt to that address sends
// a PreKeySignalMessage.
func ProcessPreKeyBundle(ctx context.Context, rand io.Reader, store interface {
	IdentityStore
	SessionStore
}, local, remote Address, bundle *PreKeyBundle, now time.Time) error {
	trusted, err := store.IsTrustedIdentity(ctx, remote, bundle.IdentityKey, Sending)
	if err != nil {
		return fmt.Errorf("check identity: %w", err)
	}
	if !trusted {
		return &UntrustedIdentityError{Address: remote, Key: bundle.IdentityKey}
	}
	if err := bundle.Verify(); err != nil {
		return err
	}
	ours, regID, err := localIdentity(ctx, store)
	if err != nil {
		return err
	}
	record, err := store.LoadSession(ctx, remote)
	if err != nil {
		return fmt.Errorf("load session: %w", err)
	}
	if record == nil {
		record = NewSessionRecord()
	}

	base, err := GenerateKeyPair(rand)
	if err != nil {
		return err
	}
	dhs := []agreement{
		{ours.Private, bundle.SignedPreKey},
		{base.Private, bundle.IdentityKey},
		{base.Private, bundle.SignedPreKey},
	}
	if bundle.PreKey != nil {
		dhs = append(dhs, agreement{base.Private, *bundle.PreKey})
	}
	secrets, err := agreeAll(dhs)
	if err != nil {
		return err
	}
	ss, kyberCT, err := bundle.KyberPreKey.Encapsulate(rand)
	if err != nil {
		return err
	}
	secrets = append(secrets, ss...)
	keys, err := deriveHandshake(secrets)
	if err != nil {
		return err
	}

	sending, err := GenerateKeyPair(rand)
	if err != nil {
		return err
	}
	root, sendChain, err := createChain(keys.root, bundle.SignedPreKey, sending.Private)
	if err != nil {
		return err
	}
	self := sameAccount(local, remote, ours.Public, bundle.IdentityKey)
	pq, err := spqr.InitialState(pqrParams(keys.pqrKey, spqr.A2B, self))
	if err != nil {
		return fmt.Errorf("post-quantum ratchet: %w", err)
	}
	state := &sessionState{
		version:        CurrentVersion,
		localIdentity:  ours.Public,
		remoteIdentity: bundle.IdentityKey,
		rootKey:        root,
		sender:         &senderChain{ratchet: sending, chain: sendChain},
		receivers:      []receiverChain{{ratchetKey: bundle.SignedPreKey, chain: keys.chain}},
		pending: &pendingPreKey{
			signedPreKeyID: bundle.SignedPreKeyID,
			baseKey:        base.Public,
			timestamp:      uint64(now.Unix()),
		},
		pendingKyber:   &pendingKyberPreKey{id: bundle.KyberPreKeyID, ciphertext: kyberCT},
		remoteRegID:    bundle.RegistrationID,
		localRegID:     regID,
		aliceBaseKey:   base.Public.Bytes(),
		pqRatchetState: pq,
	}
	if bundle.PreKey != nil {
		id := bundle.PreKeyID
		state.pending.preKeyID = &id
	}
	if err := store.SaveIdentity(ctx, remote, bundle.IdentityKey); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	record.promoteState(state)
	if err := store.StoreSession(ctx, remote, record); err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	return nil
}

// Encrypt encrypts plaintext for a remote device with the current session:
// a PreKeySignalMessage until the remote has answered, a SignalMessage
// after. It fails with ErrNoSession when there is no session to send on
// (build one with ProcessPreKeyBundle) and with *UntrustedIdentityError
// when the remote's identity is not trusted for sending.
func Encrypt(ctx context.Context, rand io.Reader, store interface {
	IdentityStore
	SessionStore
}, local, remote Address, plaintext []byte, now time.Time) (CiphertextMessage, error) {
	record, err := store.LoadSession(ctx, remote)
	if err != nil {
		return CiphertextMessage{}, fmt.Errorf("load session: %w", err)
	}
	if record == nil || record.current == nil || record.current.sender == nil {
		return CiphertextMessage{}, fmt.Errorf("%w with %s", ErrNoSession, remote)
	}
	if !record.current.usable(now) {
		return CiphertextMessage{}, fmt.Errorf("%w with %s: the session is stale or of an old version", ErrNoSession, remote)
	}
	state, err := record.current.clone()
	if err != nil {
		return CiphertextMessage{}, err
	}

	pqState, pqKey, pqMsg, err := spqr.Send(state.pqRatchetState, rand)
	if err != nil {
		return CiphertextMessage{}, fmt.Errorf("%w: post-quantum ratchet send: %v", ErrInvalidState, err)
	}
	mk, err := deriveMessageKeys(state.sender.chain.messageSeed(), pqKey)
	if err != nil {
		return CiphertextMessage{}, err
	}
	ct := cbcEncrypt(mk.cipherKey, mk.iv, plaintext)

	var out CiphertextMessage
	if p := state.pending; p != nil {
		msg := newSignalMessage(byte(state.version), mk.macKey, addressesBinding(local, remote),
			state.sender.ratchet.Public, state.sender.chain.index, state.previousCounter, ct,
			state.localIdentity, state.remoteIdentity, pqMsg)
		var kid uint32
		var kct []byte
		if state.pendingKyber != nil {
			kid, kct = state.pendingKyber.id, state.pendingKyber.ciphertext
		}
		pk := newPreKeySignalMessage(byte(state.version), state.localRegID, p.preKeyID, p.signedPreKeyID,
			kid, kct, p.baseKey, state.localIdentity, msg)
		out = CiphertextMessage{Type: TypePreKey, Bytes: pk.serialized}
	} else {
		msg := newSignalMessage(byte(state.version), mk.macKey, nil,
			state.sender.ratchet.Public, state.sender.chain.index, state.previousCounter, ct,
			state.localIdentity, state.remoteIdentity, pqMsg)
		out = CiphertextMessage{Type: TypeSignal, Bytes: msg.serialized}
	}

	trusted, err := store.IsTrustedIdentity(ctx, remote, state.remoteIdentity, Sending)
	if err != nil {
		return CiphertextMessage{}, fmt.Errorf("check identity: %w", err)
	}
	if !trusted {
		return CiphertextMessage{}, &UntrustedIdentityError{Address: remote, Key: state.remoteIdentity}
	}
	if err := store.SaveIdentity(ctx, remote, state.remoteIdentity); err != nil {
		return CiphertextMessage{}, fmt.Errorf("save identity: %w", err)
	}
	state.sender.chain = state.sender.chain.next()
	state.pqRatchetState = pqState
	record.current = state
	if err := store.StoreSession(ctx, remote, record); err != nil {
		return CiphertextMessage{}, fmt.Errorf("store session: %w", err)
	}
	return out, nil
}

// Decrypt decrypts a message of type TypePreKey or TypeSignal from a
// remote device. Errors: ErrInvalidMessage (malformed, wrong MAC, no
// session that decrypts it), ErrLegacyMessage (version 3 or older),
// ErrDuplicateMessage (already decrypted), ErrNoSession, ErrNoPreKey (the
// prekey it names is gone), ErrPreKeyReused (a replay on the last-resort
// key), ErrInvalidKey (a key that cannot be used), ErrInvalidState (a
// damaged stored record), *UntrustedIdentityError, and the store's own.
//
// On any error nothing in the store changes, given the two things every
// store must do: LoadSession returns a record the caller owns (a fresh
// decoding, never a shared pointer), and the calls of one Decrypt commit
// together (one database transaction, as parley's client does). Without
// the second, a failure of the store itself can leave a prekey removed
// while its session was not stored.
func Decrypt(ctx context.Context, rand io.Reader, store Store, local, remote Address, typ MessageType, body []byte) ([]byte, error) {
	switch typ {
	case TypePreKey:
		m, err := ParsePreKeySignalMessage(body)
		if err != nil {
			return nil, err
		}
		return decryptPreKey(ctx, rand, store, local, remote, m)
	case TypeSignal:
		m, err := ParseSignalMessage(body)
		if err != nil {
			return nil, err
		}
		return decryptSignal(ctx, rand, store, local, remote, m)
	}
	return nil, fmt.Errorf("%w: message type %d is not a one-to-one message", ErrInvalidMessage, typ)
}

func decryptPreKey(ctx context.Context, rand io.Reader, store Store, local, remote Address, m *PreKeySignalMessage) ([]byte, error) {
	trusted, err := store.IsTrustedIdentity(ctx, remote, m.IdentityKey, Receiving)
	if err != nil {
		return nil, fmt.Errorf("check identity: %w", err)
	}
	if !trusted {
		return nil, &UntrustedIdentityError{Address: remote, Key: m.IdentityKey}
	}
	record, err := store.LoadSession(ctx, remote)
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	if record == nil {
		record = NewSessionRecord()
	}
	found, err := record.promoteMatching(uint32(m.Version), m.BaseKey.Bytes())
	if err != nil {
		return nil, err
	}
	var usedPreKey bool
	if !found {
		if err := acceptPreKey(ctx, store, local, remote, record, m); err != nil {
			return nil, err
		}
		usedPreKey = true
	}
	plaintext, err := decryptFromRecord(rand, record, local, remote, m.Message, true)
	if err != nil {
		return nil, err
	}
	if usedPreKey {
		// First: a refused replay of the last-resort key changes nothing.
		if err := store.MarkKyberPreKeyUsed(ctx, m.KyberPreKeyID, m.SignedPreKeyID, m.BaseKey); err != nil {
			return nil, fmt.Errorf("mark Kyber prekey used: %w", err)
		}
		if m.PreKeyID != nil {
			if err := store.RemovePreKey(ctx, *m.PreKeyID); err != nil {
				return nil, fmt.Errorf("remove prekey: %w", err)
			}
		}
	}
	if err := store.SaveIdentity(ctx, remote, m.IdentityKey); err != nil {
		return nil, fmt.Errorf("save identity: %w", err)
	}
	if err := store.StoreSession(ctx, remote, record); err != nil {
		return nil, fmt.Errorf("store session: %w", err)
	}
	return plaintext, nil
}

// acceptPreKey builds the responder's side of a PQXDH session from a
// PreKeySignalMessage and makes it the record's current session.
func acceptPreKey(ctx context.Context, store Store, local, remote Address, record *SessionRecord, m *PreKeySignalMessage) error {
	if !m.BaseKey.canonical() {
		return fmt.Errorf("%w: the base key is not a canonical point", ErrInvalidMessage)
	}
	spk, err := store.LoadSignedPreKey(ctx, m.SignedPreKeyID)
	if err != nil {
		return fmt.Errorf("signed prekey %d: %w", m.SignedPreKeyID, err)
	}
	kyber, err := store.LoadKyberPreKey(ctx, m.KyberPreKeyID)
	if err != nil {
		return fmt.Errorf("kyber prekey %d: %w", m.KyberPreKeyID, err)
	}
	var otk *PreKeyRecord
	if m.PreKeyID != nil {
		k, err := store.LoadPreKey(ctx, *m.PreKeyID)
		if err != nil {
			return fmt.Errorf("prekey %d: %w", *m.PreKeyID, err)
		}
		otk = &k
	}
	ours, regID, err := localIdentity(ctx, store)
	if err != nil {
		return err
	}

	dhs := []agreement{
		{spk.KeyPair.Private, m.IdentityKey},
		{ours.Private, m.BaseKey},
		{spk.KeyPair.Private, m.BaseKey},
	}
	if otk != nil {
		dhs = append(dhs, agreement{otk.KeyPair.Private, m.BaseKey})
	}
	secrets, err := agreeAll(dhs)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	ss, err := kyber.KeyPair.Decapsulate(m.KyberCiphertext)
	if err != nil {
		return err
	}
	secrets = append(secrets, ss...)
	keys, err := deriveHandshake(secrets)
	if err != nil {
		return err
	}
	self := sameAccount(local, remote, ours.Public, m.IdentityKey)
	pq, err := spqr.InitialState(pqrParams(keys.pqrKey, spqr.B2A, self))
	if err != nil {
		return fmt.Errorf("post-quantum ratchet: %w", err)
	}
	record.promoteState(&sessionState{
		version:        CurrentVersion,
		localIdentity:  ours.Public,
		remoteIdentity: m.IdentityKey,
		rootKey:        keys.root,
		sender:         &senderChain{ratchet: spk.KeyPair, chain: keys.chain},
		remoteRegID:    m.RegistrationID,
		localRegID:     regID,
		aliceBaseKey:   m.BaseKey.Bytes(),
		pqRatchetState: pq,
	})
	return nil
}

func decryptSignal(ctx context.Context, rand io.Reader, store Store, local, remote Address, m *SignalMessage) ([]byte, error) {
	record, err := store.LoadSession(ctx, remote)
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	if record == nil || (record.current == nil && len(record.previous) == 0) {
		return nil, fmt.Errorf("%w with %s", ErrNoSession, remote)
	}
	plaintext, err := decryptFromRecord(rand, record, local, remote, m, false)
	if err != nil {
		return nil, err
	}
	trusted, err := store.IsTrustedIdentity(ctx, remote, record.current.remoteIdentity, Receiving)
	if err != nil {
		return nil, fmt.Errorf("check identity: %w", err)
	}
	if !trusted {
		return nil, &UntrustedIdentityError{Address: remote, Key: record.current.remoteIdentity}
	}
	if err := store.SaveIdentity(ctx, remote, record.current.remoteIdentity); err != nil {
		return nil, fmt.Errorf("save identity: %w", err)
	}
	if err := store.StoreSession(ctx, remote, record); err != nil {
		return nil, fmt.Errorf("store session: %w", err)
	}
	return plaintext, nil
}

// decryptFromRecord tries the current session, then (for a SignalMessage)
// each archived one, each on a copy; the one that decrypts becomes current.
func decryptFromRecord(rand io.Reader, record *SessionRecord, local, remote Address, m *SignalMessage, preKey bool) ([]byte, error) {
	if record.current != nil && record.current.version == uint32(m.Version) {
		s, err := record.current.clone()
		if err != nil {
			return nil, err
		}
		pt, err := decryptWithState(rand, s, local, remote, m)
		if err == nil {
			record.current = s
			return pt, nil
		}
		if errors.Is(err, ErrDuplicateMessage) {
			return nil, err
		}
		if preKey {
			return nil, fmt.Errorf("%w: decryption failed: %v", ErrInvalidMessage, err)
		}
	}
	if preKey {
		return nil, fmt.Errorf("%w: no session for the prekey message", ErrInvalidMessage)
	}
	for i, enc := range record.previous {
		s, err := unmarshalSessionState(enc)
		if err != nil || s.version != uint32(m.Version) {
			continue
		}
		pt, err := decryptWithState(rand, s, local, remote, m)
		if err == nil {
			record.removePrevious(i)
			record.promoteState(s)
			return pt, nil
		}
		if errors.Is(err, ErrDuplicateMessage) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: no session with %s decrypts it", ErrInvalidMessage, remote)
}

// decryptWithState decrypts with one session, changing s (a copy) on the way.
func decryptWithState(rand io.Reader, s *sessionState, local, remote Address, m *SignalMessage) ([]byte, error) {
	if len(s.pqRatchetState) == 0 {
		return nil, fmt.Errorf("%w: session has no post-quantum ratchet", ErrInvalidState)
	}
	idx := s.receiverIndex(m.RatchetKey)
	if idx < 0 {
		var err error
		if idx, err = ratchetStep(rand, s, m.RatchetKey); err != nil {
			return nil, err
		}
	}
	maxJump := uint32(MaxForwardJumps)
	if sameAccount(local, remote, s.localIdentity, s.remoteIdentity) {
		maxJump = math.MaxUint32
	}
	seed, err := consumeMessageKey(&s.receivers[idx], m.Counter, maxJump)
	if err != nil {
		return nil, err
	}
	pqState, pqKey, err := spqr.Recv(s.pqRatchetState, m.PQRatchet)
	if err != nil {
		return nil, fmt.Errorf("%w: post-quantum ratchet: %v", ErrInvalidMessage, err)
	}
	mk, err := deriveMessageKeys(seed, pqKey)
	if err != nil {
		return nil, err
	}
	if !m.verifyMAC(s.remoteIdentity, s.localIdentity, mk.macKey) {
		return nil, fmt.Errorf("%w: bad MAC", ErrInvalidMessage)
	}
	if m.Addresses != nil {
		want := addressesBinding(remote, local)
		if want == nil || !bytes.Equal(want, m.Addresses) {
			return nil, fmt.Errorf("%w: the message is addressed to another device", ErrInvalidMessage)
		}
	}
	pt, err := cbcDecrypt(mk.cipherKey, mk.iv, m.Ciphertext)
	if err != nil {
		return nil, err
	}
	s.pqRatchetState = pqState
	s.pending = nil
	s.pendingKyber = nil
	return pt, nil
}

// ratchetStep performs the Diffie-Hellman ratchet for a new remote ratchet
// key: a new receiving chain, then a new sending chain with a fresh key.
// It returns the index of the new receiving chain.
func ratchetStep(rand io.Reader, s *sessionState, theirs PublicKey) (int, error) {
	if s.sender == nil {
		return 0, fmt.Errorf("%w: session has no sending chain", ErrInvalidState)
	}
	root, recv, err := createChain(s.rootKey, theirs, s.sender.ratchet.Private)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	next, err := GenerateKeyPair(rand)
	if err != nil {
		return 0, err
	}
	root, send, err := createChain(root, theirs, next.Private)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	if s.sender.chain.index > 0 {
		s.previousCounter = s.sender.chain.index - 1
	} else {
		s.previousCounter = 0
	}
	s.rootKey = root
	s.receivers = append(s.receivers, receiverChain{ratchetKey: theirs, chain: recv})
	if len(s.receivers) > maxReceiverChains {
		s.receivers = append([]receiverChain(nil), s.receivers[len(s.receivers)-maxReceiverChains:]...)
	}
	s.sender = &senderChain{ratchet: next, chain: send}
	return len(s.receivers) - 1, nil
}

// consumeMessageKey returns the message seed for counter on a receiving
// chain: a skipped key kept earlier, or the chain advanced to it (keeping
// the keys it passes, at most MaxMessageKeys).
func consumeMessageKey(r *receiverChain, counter, maxJump uint32) ([]byte, error) {
	if r.chain.index > counter {
		for i, k := range r.skipped {
			if k.index == counter {
				r.skipped = append(r.skipped[:i:i], r.skipped[i+1:]...)
				return k.seed, nil
			}
		}
		return nil, fmt.Errorf("%w: counter %d (chain at %d)", ErrDuplicateMessage, counter, r.chain.index)
	}
	if counter-r.chain.index > maxJump {
		return nil, fmt.Errorf("%w: message from too far in the future (%d ahead)", ErrInvalidMessage, counter-r.chain.index)
	}
	c := r.chain
	var passed []skippedKey // oldest first; only the newest MaxMessageKeys are kept
	for c.index < counter {
		if counter-c.index <= MaxMessageKeys {
			passed = append(passed, skippedKey{index: c.index, seed: c.messageSeed()})
		}
		c = c.next()
	}
	if len(passed) > 0 {
		kept := make([]skippedKey, 0, min(len(passed)+len(r.skipped), MaxMessageKeys))
		for i := len(passed) - 1; i >= 0; i-- {
			kept = append(kept, passed[i])
		}
		kept = append(kept, r.skipped...)
		r.skipped = kept[:min(len(kept), MaxMessageKeys)]
	}
	r.chain = c.next()
	return c.messageSeed(), nil
}
