package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/keys"
)

// Linking limits.
const (
	// MaxDevices is how many devices an account may have, the primary
	// included (Signal allows five linked devices besides the phone).
	MaxDevices = 6
	// LinkCodeTTL is how long a link code stays usable.
	LinkCodeTTL = 10 * time.Minute
)

// Linking errors.
var (
	ErrBadLinkCode    = errors.New("the link code is unknown, used or expired")
	ErrTooManyDevices = fmt.Errorf("the account already has %d devices", MaxDevices)
)

func linkCodeHash(code string) []byte {
	h := sha256.Sum256([]byte(code))
	return h[:]
}

// NewLinkCode returns a one-time code with which one new device may join
// the account of p, which must be the primary device. The code is 256
// random bits; the relay keeps only its SHA-256.
func (s *Service) NewLinkCode(ctx context.Context, p Principal) (string, time.Time, error) {
	if p.Device != PrimaryDevice {
		return "", time.Time{}, ErrForbidden
	}
	b := make([]byte, 32)
	rand.Read(b)
	code := base64.RawURLEncoding.EncodeToString(b)
	expires := s.now().Add(LinkCodeTTL)
	if err := s.store.CreateLinkCode(ctx, linkCodeHash(code), p.Account, expires); err != nil {
		return "", time.Time{}, fmt.Errorf("create link code: %w", err)
	}
	return code, expires, nil
}

// Link is a new device's request to join an account.
type Link struct {
	Account        uuid.UUID
	Code           string
	Credential     string
	RegistrationID int
	SignedPreKey   keys.SignedPreKey
	LastResort     keys.KEMPreKey
	PreKeys        []keys.PreKey
	KEMPreKeys     []keys.KEMPreKey
}

// LinkDevice adds the device to the account with a link code from
// NewLinkCode; its keys must be signed by the account's identity key (which
// the primary handed over inside the provisioning message). It returns the
// new device id.
func (s *Service) LinkDevice(ctx context.Context, l Link) (int, error) {
	if err := CheckCredentialFormat(l.Credential); err != nil {
		return 0, err
	}
	if l.RegistrationID < 1 || l.RegistrationID > 16380 {
		return 0, ErrBadRegistrationID
	}
	if len(l.Code) == 0 || len(l.Code) > 64 {
		return 0, ErrBadLinkCode
	}
	acct, err := s.store.Account(ctx, l.Account)
	if errors.Is(err, ErrNotFound) {
		return 0, ErrBadLinkCode // no account: the code cannot be for it
	}
	if err != nil {
		return 0, fmt.Errorf("look up account: %w", err)
	}
	// The code first, without consuming it: a bogus request costs one
	// lookup, not a hundred signature checks. LinkDevice checks it again
	// as it consumes it.
	if ok, err := s.store.LinkCodeValid(ctx, linkCodeHash(l.Code), l.Account, s.now()); err != nil {
		return 0, err
	} else if !ok {
		return 0, ErrBadLinkCode
	}
	up := keys.Upload{SignedPreKey: &l.SignedPreKey, LastResort: &l.LastResort, PreKeys: l.PreKeys, KEMPreKeys: l.KEMPreKeys}
	if s.OnSignatureChecks != nil {
		s.OnSignatureChecks(up.Signatures())
	}
	if err := up.Validate(acct.IdentityKey); err != nil {
		return 0, err
	}
	cred, err := s.creds.hash([]byte(l.Credential))
	if err != nil {
		return 0, err
	}
	id, err := s.store.LinkDevice(ctx, linkCodeHash(l.Code), l.Account, NewDevice{
		RegistrationID: l.RegistrationID, Credential: cred, SignedPreKey: l.SignedPreKey,
		LastResort: l.LastResort, PreKeys: l.PreKeys, KEMPreKeys: l.KEMPreKeys,
	}, s.now(), MaxDevices)
	if err != nil {
		return 0, err
	}
	s.log.InfoContext(ctx, "device linked", "account", l.Account, "device", id)
	return id, nil
}
