// Package cli is the parley client: a Signal-protocol messenger over a
// parley relay, with its state in an encrypted local database. cmd/parley
// is its command line; this package is what a developer reads to learn the
// protocol flows (registration, session setup, sending with device-list
// repair, robust receiving, trust and safety numbers).
package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/cli/vault"
	"github.com/parleyhq/parley/internal/caroots"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/protocol"
)

// DefaultServer is the relay used when neither --server, PARLEY_SERVER nor
// the account's stored server says otherwise: what `make run` starts.
const DefaultServer = "http://127.0.0.1:8080"

// Errors that commands map to exit codes.
var (
	// ErrUsage is a mistake by the user: a bad argument, a missing account.
	ErrUsage = errors.New("usage")
	// ErrNotRegistered reports an account directory that has not finished
	// registering.
	ErrNotRegistered = fmt.Errorf("%w: this account is not registered; run `parley -a NUMBER register` then `verify CODE`", ErrUsage)
)

// UntrustedError reports that a recipient's identity key is not trusted, so
// nothing was sent to them.
type UntrustedError struct {
	Number  string
	Account string
}

func (e *UntrustedError) Error() string {
	who := e.Number
	if who == "" {
		who = e.Account
	}
	return fmt.Sprintf("the identity key of %s changed or is not trusted; compare safety numbers (`parley listIdentities -n %s`) and run `parley trust %s --verified-safety-number N`", who, who, who)
}

// Options open an account.
type Options struct {
	// Dir is the config directory holding one subdirectory per account.
	Dir string
	// Number is the account's E.164 number; empty selects the only account
	// in Dir.
	Number string
	// Server overrides the relay URL stored with the account.
	Server string
	// Trust is the mode for new and changed identity keys.
	Trust TrustMode
	// Passphrase returns the passphrase of a protected key file; nil if
	// none is available.
	Passphrase func() ([]byte, error)
	// NewPassphrase, when creating an account, protects its key file.
	NewPassphrase []byte
	// Progress, if set, is told about attachment transfers: it returns a
	// writer that receives every byte moved (total in all) and is closed
	// when the transfer ends.
	Progress func(label string, total int64) io.WriteCloser
	// Notice, if set, is told things the user should read once (such as an
	// upgrade of the account's store).
	Notice func(string)
	// CAFile, if set, is a PEM file of certificate authorities trusted
	// besides the system's (a relay behind a private CA).
	CAFile string
	// TrustRoot, if set, is the operator trust root (a serialized public
	// key) the relay's sealed-sender certificates must chain to; without
	// it the relay's root is learned at registration and pinned.
	TrustRoot []byte
	Log       *slog.Logger
	Now       func() time.Time
}

// Account is an open account directory.
type Account struct {
	dir   string
	db    *clientdb.DB
	key   *vault.Key
	relay *relayclient.Client
	log   *slog.Logger
	now   func() time.Time
	trust TrustMode
	// notice tells the user something once (nil: nobody).
	notice func(string)
	// progress reports attachment transfers (nil: silently).
	progress func(label string, total int64) io.WriteCloser

	Number   string
	Server   string
	ID       string // account id; "" until registered
	DeviceID int
	regID    uint32
	identity *protocol.IdentityKeyPair

	// mu serialises protocol operations of this process (the database
	// serialises them across processes).
	mu sync.Mutex
	// maintained is when Maintain last ran (it runs at most once a minute).
	maintained time.Time
	// ownDevices are this account's other devices as last listed, at
	// ownDevicesAt: sent messages are copied to them.
	ownDevices   []int
	ownDevicesAt time.Time
	// trustRoot is Options.TrustRoot; sealed is the sealed-sender state.
	trustRoot *protocol.PublicKey
	sealed    sealedState
	// caFile is Options.CAFile.
	caFile string
}

// newRelayClient is a relay client trusting caFile's authorities too.
func newRelayClient(server, caFile string) (*relayclient.Client, error) {
	if caFile == "" {
		return relayclient.New(server)
	}
	roots, err := caroots.Load(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	return relayclient.NewWithRoots(server, roots)
}

// DefaultDir is the config directory: $XDG_DATA_HOME/parley or
// ~/.local/share/parley.
func DefaultDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "parley-data"
	}
	return filepath.Join(home, ".local", "share", "parley")
}

// Accounts lists the numbers with an account directory in dir.
func Accounts(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if n, err := phone.Parse(e.Name()); err == nil && e.IsDir() && n.String() == e.Name() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (o *Options) number() (string, error) {
	if o.Number != "" {
		n, err := phone.Parse(o.Number)
		if err != nil {
			return "", fmt.Errorf("%w: account %q: %v", ErrUsage, o.Number, err)
		}
		return n.String(), nil
	}
	all, err := Accounts(o.Dir)
	if err != nil {
		return "", err
	}
	switch len(all) {
	case 1:
		return all[0], nil
	case 0:
		return "", fmt.Errorf("%w: no account in %s; run `parley -a NUMBER register`", ErrUsage, o.Dir)
	}
	return "", fmt.Errorf("%w: several accounts in %s (%v); choose one with -a NUMBER", ErrUsage, o.Dir, all)
}

// Open opens an existing account directory.
func Open(ctx context.Context, o Options) (*Account, error) {
	return open(ctx, o, false)
}

func open(ctx context.Context, o Options, create bool) (*Account, error) {
	number, err := o.number()
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Trust == "" {
		o.Trust = TrustOnFirstUse
	}
	dir := filepath.Join(o.Dir, number)
	keyPath := filepath.Join(dir, "key")
	var key *vault.Key
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("%w: no account %s in %s; run `parley -a %s register`", ErrUsage, number, o.Dir, number)
		}
		// Both directories are created owner-only; an existing config
		// directory (perhaps one the user chose) keeps its mode.
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if key, err = vault.Create(keyPath, o.NewPassphrase); err != nil {
			return nil, fmt.Errorf("create key file: %w", err)
		}
	} else if key, err = vault.Load(keyPath, o.Passphrase); err != nil {
		if errors.Is(err, vault.ErrWrongPassphrase) || errors.Is(err, vault.ErrNeedPassphrase) {
			return nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		return nil, fmt.Errorf("key file %s: %w", keyPath, err)
	}
	db, err := clientdb.Open(ctx, filepath.Join(dir, "state.db"), key)
	if err != nil {
		return nil, err
	}
	a := &Account{dir: dir, db: db, key: key, log: o.Log, now: o.Now, trust: o.Trust, progress: o.Progress, notice: o.Notice, Number: number, caFile: o.CAFile}
	if o.TrustRoot != nil {
		k, err := protocol.ParsePublicKey(o.TrustRoot)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%w: trust root: %w", ErrUsage, err), db.Close())
		}
		a.trustRoot = &k
	}
	if err := a.load(ctx, o.Server); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	a.expire(ctx) // whatever the command, disappeared messages go first
	return a, nil
}

// Close closes the account's database.
func (a *Account) Close() error { return a.db.Close() }

// Dir is the account's directory.
func (a *Account) Dir() string { return a.dir }

// ConfigDir is the directory that holds this and the other accounts.
func (a *Account) ConfigDir() string { return filepath.Dir(a.dir) }

// Meta keys.
const (
	metaServer         = "server"
	metaAccountID      = "account_id"
	metaDeviceID       = "device_id"
	metaRegistrationID = "registration_id"
	metaCredential     = "credential"       // sealed
	metaIdentity       = "identity_private" // sealed
	metaPendingSession = "pending_session"  // sealed
)

func (a *Account) load(ctx context.Context, server string) error {
	var pending string // a notice, told once the transaction committed
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		stored, err := tx.Value(ctx, metaServer)
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
			return err
		}
		a.Server = server
		if a.Server == "" {
			a.Server = string(stored)
		}
		if a.Server == "" {
			a.Server = DefaultServer
		}
		if a.relay, err = newRelayClient(a.Server, a.caFile); err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		id, err := tx.Value(ctx, metaAccountID)
		registered := err == nil
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) {
			return err
		}
		notice, err := upgradeStore(ctx, tx, registered)
		if err != nil {
			return fmt.Errorf("upgrade the account's store: %w", err)
		}
		pending = notice
		if !registered {
			return nil // not registered yet
		}
		dev, err1 := tx.Value(ctx, metaDeviceID)
		reg, err2 := tx.Value(ctx, metaRegistrationID)
		cred, err3 := tx.Value(ctx, metaCredential)
		priv, err4 := tx.Value(ctx, metaIdentity)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return fmt.Errorf("account state is incomplete: %w", err)
		}
		a.ID = string(id)
		a.DeviceID, _ = strconv.Atoi(string(dev))
		r, _ := strconv.ParseUint(string(reg), 10, 32)
		a.regID = uint32(r)
		ik, err := identityFromPrivate(priv)
		if err != nil {
			return err
		}
		a.identity = &ik
		a.relay.User, a.relay.Password = deviceName(a.ID, a.DeviceID), string(cred)
		return a.sealed.read(ctx, tx)
	})
	if err == nil && pending != "" && a.notice != nil {
		a.notice(pending)
	}
	return err
}

// Registered reports whether the account has finished registering.
func (a *Account) Registered() bool { return a.ID != "" }

func (a *Account) requireRegistered() error {
	if !a.Registered() {
		return ErrNotRegistered
	}
	return nil
}

// IdentityKey is the account's public identity key.
func (a *Account) IdentityKey() []byte { return a.identity.Public.Bytes() }

// Register starts registering number (creating its directory if needed):
// the relay sends a verification code by SMS. Finish with Verify.
func Register(ctx context.Context, o Options) (*Account, relayclient.VerificationSession, error) {
	a, err := open(ctx, o, true)
	if err != nil {
		return nil, relayclient.VerificationSession{}, err
	}
	s, err := a.relay.StartVerification(ctx, a.Number)
	if err == nil {
		err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
			return errors.Join(tx.SetValue(ctx, metaPendingSession, []byte(s.SessionID), true), tx.SetValue(ctx, metaServer, []byte(a.Server), false))
		})
	}
	if err != nil {
		return nil, s, errors.Join(err, a.Close())
	}
	return a, s, nil
}

// Verify submits the SMS code and registers the account with fresh keys
// (or the existing identity, when re-registering from the same directory).
// pin is the registration-lock PIN, needed only if the number has one.
func (a *Account) Verify(ctx context.Context, code, pin string) error {
	var session []byte
	err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		session, err = tx.Value(ctx, metaPendingSession)
		return err
	})
	if errors.Is(err, clientdb.ErrNotFound) {
		return fmt.Errorf("%w: no registration in progress; run `parley -a %s register` first", ErrUsage, a.Number)
	}
	if err != nil {
		return err
	}
	if _, err := a.relay.CheckCode(ctx, string(session), code); err != nil {
		return err
	}
	now := a.now()
	cred := newCredential()
	reg := relayclient.Registration{SessionID: string(session), Credential: cred}
	if pin != "" {
		reg.RegistrationLock = lockToken(a.Number, pin)
	}
	var ik protocol.IdentityKeyPair
	if a.identity != nil {
		ik = *a.identity
	} else if ik, err = newIdentity(); err != nil {
		return err
	}
	regID := newRegistrationID()
	// Keys are generated in a transaction that commits only once the relay
	// has accepted them, so a refused registration leaves nothing behind.
	err = a.db.Update(ctx, func(tx *clientdb.Tx) error {
		k, err := newDeviceKeys(ctx, tx, ik, now)
		if err != nil {
			return err
		}
		reg.SignedPreKey, reg.PreKeys, reg.PQLastResortKey, reg.PQPreKeys = k.SignedPreKey, k.PreKeys, k.LastResort, k.PQPreKeys
		reg.RegistrationID, reg.IdentityKey = regID, ik.Public.Bytes()
		id, device, err := a.relay.Register(ctx, reg)
		if err != nil {
			return err
		}
		// A re-registration replaced every device: old sessions with us are
		// gone on the other side, and ours with others must restart too.
		if err := tx.DeleteSessions(ctx, "", true); err != nil {
			return err
		}
		return errors.Join(saveDevice(ctx, tx, id, device, regID, cred, ik), tx.DeleteValue(ctx, metaPendingSession),
			tx.DeleteValue(ctx, metaAccessKeyPublished)) // a new registration publishes it again
	})
	if err != nil {
		return err
	}
	if err := a.load(ctx, a.Server); err != nil {
		return err
	}
	return a.setupAfterRegistration(ctx)
}

// setupAfterRegistration sets up sealed sender on a new device. Only a
// trust root other than the pinned one fails the command; other problems
// leave sealed sender off for now (Maintain tries again) and are told.
func (a *Account) setupAfterRegistration(ctx context.Context) error {
	err := a.SetupSealedSender(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrTrustRootChanged):
		return fmt.Errorf("%w: registered, but %w; sealed sender stays off", ErrUsage, err)
	}
	a.log.WarnContext(ctx, "sealed sender not set up yet", "err", err)
	if a.notice != nil {
		a.notice("sealed sender is not set up yet (it is tried again later): " + err.Error())
	}
	return nil
}

// newCredential is a device's random credential (256 bits, base64url).
func newCredential() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// saveDevice stores who this device is once the relay has accepted it.
func saveDevice(ctx context.Context, tx *clientdb.Tx, account string, device int, regID uint32, cred string, ik protocol.IdentityKeyPair) error {
	return errors.Join(
		tx.SetValue(ctx, metaAccountID, []byte(account), false),
		tx.SetValue(ctx, metaDeviceID, []byte(strconv.Itoa(device)), false),
		tx.SetValue(ctx, metaRegistrationID, []byte(strconv.FormatUint(uint64(regID), 10)), false),
		tx.SetValue(ctx, metaCredential, []byte(cred), true),
		tx.SetValue(ctx, metaIdentity, ik.Private.Bytes(), true),
	)
}

// lockToken derives the registration-lock token from the PIN: argon2id
// salted with the number, so the same PIN re-registers the number from any
// new device and the relay never sees the PIN.
func lockToken(number, pin string) []byte {
	salt := sha256.Sum256([]byte("parley registration lock\x00" + number))
	return argon2.IDKey([]byte(pin), salt[:16], 3, 64*1024, 4, 32)
}

// SetPin sets (or with "" removes) the registration lock.
func (a *Account) SetPin(ctx context.Context, pin string) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if pin == "" {
		return a.relay.SetRegistrationLock(ctx, nil)
	}
	if len(pin) < 4 {
		return fmt.Errorf("%w: a PIN has at least 4 characters", ErrUsage)
	}
	return a.relay.SetRegistrationLock(ctx, lockToken(a.Number, pin))
}

// Devices lists the account's devices.
func (a *Account) Devices(ctx context.Context) ([]relayclient.Device, error) {
	if err := a.requireRegistered(); err != nil {
		return nil, err
	}
	return a.relay.Devices(ctx)
}

// RemoveDevice unlinks a device of this account.
func (a *Account) RemoveDevice(ctx context.Context, device int) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if device == a.DeviceID {
		return fmt.Errorf("%w: this is the current device; use unregister", ErrUsage)
	}
	return a.relay.RemoveDevice(ctx, device)
}

// Unregister deletes the account on the relay and, if deleteLocal, its
// local directory (keys, sessions, history).
func (a *Account) Unregister(ctx context.Context, deleteLocal bool) error {
	if err := a.requireRegistered(); err != nil {
		return err
	}
	if err := a.relay.DeleteAccount(ctx); err != nil {
		return err
	}
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		return errors.Join(tx.DeleteValue(ctx, metaAccountID), tx.DeleteValue(ctx, metaCredential))
	}); err != nil {
		return err
	}
	if deleteLocal {
		return errors.Join(a.db.Close(), os.RemoveAll(a.dir))
	}
	return nil
}

// SetPassphrase protects the key file with passphrase (or, with none,
// stores the key unwrapped).
func (a *Account) SetPassphrase(passphrase []byte) error {
	return a.key.Rewrite(filepath.Join(a.dir, "key"), passphrase)
}

// History returns the last limit messages exchanged with number, oldest
// first, decoded.
func (a *Account) History(ctx context.Context, number string, limit int) ([]HistoryEntry, error) {
	r, err := a.resolve(ctx, number)
	if err != nil {
		return nil, err
	}
	return a.history(ctx, r.Account, limit)
}

// GroupHistory returns a group's last limit messages and updates, oldest
// first.
func (a *Account) GroupHistory(ctx context.Context, group string, limit int) ([]HistoryEntry, error) {
	return a.history(ctx, group, limit)
}

func (a *Account) history(ctx context.Context, conversation string, limit int) ([]HistoryEntry, error) {
	var ms []clientdb.Message
	if err := a.db.Update(ctx, func(tx *clientdb.Tx) (err error) {
		ms, err = tx.Messages(ctx, conversation, limit)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]HistoryEntry, 0, len(ms))
	for _, m := range ms {
		c, err := content.Unmarshal(m.Body)
		if err != nil {
			continue // written by this client, so only a newer format lands here
		}
		e := HistoryEntry{Kind: c.Kind(), Outgoing: m.Outgoing, Timestamp: m.SentMS, Text: c.Text, Status: m.Status, ExpireTimer: c.ExpireTimer}
		for _, att := range c.Attachments {
			e.Files = append(e.Files, att.FileName)
		}
		out = append(out, e)
	}
	return out, nil
}

// HistoryEntry is one message of a conversation.
type HistoryEntry struct {
	Kind      string // "message" or "timer"
	Outgoing  bool
	Timestamp int64
	Text      string
	Files     []string // attachment names
	Status    int      // clientdb.StatusSent, StatusDelivered, StatusRead
	// ExpireTimer is the timer the entry carried (a "timer" entry: the
	// new timer).
	ExpireTimer int64
}
