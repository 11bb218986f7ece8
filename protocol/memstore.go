package protocol

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"
)

// MemoryStore keeps everything one device needs in memory: for tests,
// short-lived bots and as the reference of what each store method must
// do. It trusts an address's first identity key and refuses a changed one
// until Trust is called (trust on first use). It is safe for concurrent use.
type MemoryStore struct {
	mu         sync.Mutex
	identity   IdentityKeyPair
	regID      uint32
	identities map[Address]PublicKey
	sessions   map[Address][]byte
	preKeys    map[uint32]PreKeyRecord
	signed     map[uint32]SignedPreKeyRecord
	kyber      map[uint32]KyberPreKeyRecord
	lastResort map[uint32]bool
	kyberUses  map[string]bool
	senderKeys map[string][]byte
}

// NewMemoryStore makes an empty store for the given identity.
func NewMemoryStore(identity IdentityKeyPair, registrationID uint32) *MemoryStore {
	return &MemoryStore{
		identity: identity, regID: registrationID,
		identities: map[Address]PublicKey{}, sessions: map[Address][]byte{},
		preKeys: map[uint32]PreKeyRecord{}, signed: map[uint32]SignedPreKeyRecord{},
		kyber: map[uint32]KyberPreKeyRecord{}, lastResort: map[uint32]bool{},
		kyberUses: map[string]bool{}, senderKeys: map[string][]byte{},
	}
}

// IdentityKeyPair implements IdentityStore.
func (s *MemoryStore) IdentityKeyPair(context.Context) (IdentityKeyPair, error) {
	return s.identity, nil
}

// LocalRegistrationID implements IdentityStore.
func (s *MemoryStore) LocalRegistrationID(context.Context) (uint32, error) { return s.regID, nil }

// IsTrustedIdentity implements IdentityStore: the first key of an address
// is trusted, a different one is not.
func (s *MemoryStore) IsTrustedIdentity(_ context.Context, addr Address, key PublicKey, _ Direction) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known, ok := s.identities[Address{Name: addr.Name}]
	return !ok || known.Equal(key), nil
}

// SaveIdentity implements IdentityStore. Identities are per account (all
// devices of an account share one).
func (s *MemoryStore) SaveIdentity(_ context.Context, addr Address, key PublicKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities[Address{Name: addr.Name}] = key
	return nil
}

// Trust replaces what is known of an account's identity with key.
func (s *MemoryStore) Trust(name string, key PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities[Address{Name: name}] = key
}

// LoadSession implements SessionStore.
func (s *MemoryStore) LoadSession(_ context.Context, addr Address) (*SessionRecord, error) {
	s.mu.Lock()
	b, ok := s.sessions[addr]
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	return ParseSessionRecord(b)
}

// StoreSession implements SessionStore.
func (s *MemoryStore) StoreSession(_ context.Context, addr Address, r *SessionRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[addr] = r.Bytes()
	return nil
}

// AddPreKey keeps a one-time EC prekey.
func (s *MemoryStore) AddPreKey(k PreKeyRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preKeys[k.ID] = k
}

// LoadPreKey implements PreKeyStore.
func (s *MemoryStore) LoadPreKey(_ context.Context, id uint32) (PreKeyRecord, error) {
	return loadKey(s, s.preKeys, id, "one-time prekey")
}

// RemovePreKey implements PreKeyStore.
func (s *MemoryStore) RemovePreKey(_ context.Context, id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.preKeys, id)
	return nil
}

// AddSignedPreKey keeps a signed EC prekey.
func (s *MemoryStore) AddSignedPreKey(k SignedPreKeyRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signed[k.ID] = k
}

// LoadSignedPreKey implements SignedPreKeyStore.
func (s *MemoryStore) LoadSignedPreKey(_ context.Context, id uint32) (SignedPreKeyRecord, error) {
	return loadKey(s, s.signed, id, "signed prekey")
}

// AddKyberPreKey keeps a Kyber prekey; a last-resort key survives use.
func (s *MemoryStore) AddKyberPreKey(k KyberPreKeyRecord, lastResort bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kyber[k.ID] = k
	s.lastResort[k.ID] = lastResort
}

// LoadKyberPreKey implements KyberPreKeyStore.
func (s *MemoryStore) LoadKyberPreKey(_ context.Context, id uint32) (KyberPreKeyRecord, error) {
	return loadKey(s, s.kyber, id, "Kyber prekey")
}

// MarkKyberPreKeyUsed implements KyberPreKeyStore: one-time keys are
// deleted, last-resort keys kept and a second use with the same signed
// prekey and base key refused.
func (s *MemoryStore) MarkKyberPreKeyUsed(_ context.Context, id, signedID uint32, base PublicKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lastResort[id] {
		delete(s.kyber, id)
		delete(s.lastResort, id)
		return nil
	}
	use := fmt.Sprintf("%d/%d/%x", id, signedID, base.Raw())
	if s.kyberUses[use] {
		return fmt.Errorf("%w: Kyber prekey %d", ErrPreKeyReused, id)
	}
	s.kyberUses[use] = true
	return nil
}

// loadKey finds a prekey of any kind, or ErrNoPreKey.
func loadKey[K any](s *MemoryStore, keys map[uint32]K, id uint32, what string) (K, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := keys[id]
	if !ok {
		return k, fmt.Errorf("%w: %s %d", ErrNoPreKey, what, id)
	}
	return k, nil
}

func senderKeyIndex(sender Address, distribution uuid.UUID) string {
	return sender.String() + "/" + distribution.String()
}

// LoadSenderKey implements SenderKeyStore.
func (s *MemoryStore) LoadSenderKey(_ context.Context, sender Address, distribution uuid.UUID) (*SenderKeyRecord, error) {
	s.mu.Lock()
	b, ok := s.senderKeys[senderKeyIndex(sender, distribution)]
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	return ParseSenderKeyRecord(b)
}

// StoreSenderKey implements SenderKeyStore.
func (s *MemoryStore) StoreSenderKey(_ context.Context, sender Address, distribution uuid.UUID, r *SenderKeyRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.senderKeys[senderKeyIndex(sender, distribution)] = r.Bytes()
	return nil
}

// DeleteSenderKey forgets a sender's record for a distribution; deleting
// our own makes the next distribution message start a new chain.
func (s *MemoryStore) DeleteSenderKey(sender Address, distribution uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.senderKeys, senderKeyIndex(sender, distribution))
}

var (
	_ Store          = (*MemoryStore)(nil)
	_ SenderKeyStore = (*MemoryStore)(nil)
)
