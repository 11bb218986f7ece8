// Package storetest is the behavioural suite every storage backend must
// pass. Backends call Run from their own tests with a function that opens a
// fresh, migrated, empty database.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/verify"
)

// Opener returns a fresh, migrated, empty database, closed at test cleanup.
type Opener func(t *testing.T) *store.DB

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		f    func(*testing.T, *store.DB)
	}{
		{"MigrateIsIdempotent", testMigrate},
		{"VerificationSessions", testSessions},
		{"AttemptsAreAtomic", testAttemptsAtomic},
		{"SendsAreAtomic", testSendsAreAtomic},
		{"Register", testRegister},
		{"ReRegisterReplacesDevices", testReRegister},
		{"TouchDuringReRegistration", testTouchDuringReRegistration},
		{"RegistrationLock", testLock},
		{"LockGuessesAreAtomic", testLockGuessesAreAtomic},
		{"Devices", testDevices},
		{"DeleteAccountRemovesEverything", testDeleteAccount},
		{"StoreKeysAllOrNothing", testStoreKeys},
		{"PoolCapUnderConcurrentUploads", testPoolCapConcurrent},
		{"ClaimBundle", testClaim},
		{"ConcurrentClaimsHandOutEachKeyOnce", testConcurrentClaims},
	}
	tests = append(tests, relayTests...)
	tests = append(tests, attachmentTests...)
	tests = append(tests, linkingTests...)
	tests = append(tests, auditTests...)
	tests = append(tests, budgetTests...)
	tests = append(tests, sealedTests...)
	tests = append(tests, pushTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, open(t))
		})
	}
}

var now = time.UnixMilli(1_800_000_000_000)

func today() int { return int(now.Unix() / 86400) }

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func ecKey() keys.ECPublicKey {
	var k keys.ECPublicKey
	copy(k[:], append([]byte{5}, random(32)...))
	return k
}

func sig() keys.Signature {
	var s keys.Signature
	copy(s[:], random(64))
	return s
}

func kemKey(id uint32) keys.KEMPreKey {
	return keys.KEMPreKey{ID: id, PublicKey: append([]byte{8}, random(1568)...), Signature: sig()}
}

func preKeys(from, n int) []keys.PreKey {
	ks := make([]keys.PreKey, n)
	for i := range ks {
		ks[i] = keys.PreKey{ID: uint32(from + i), PublicKey: ecKey()}
	}
	return ks
}

func kemPreKeys(from, n int) []keys.KEMPreKey {
	ks := make([]keys.KEMPreKey, n)
	for i := range ks {
		ks[i] = kemKey(uint32(from + i))
	}
	return ks
}

func numberHash() phone.Hash {
	var h phone.Hash
	copy(h[:], random(32))
	return h
}

// verifiedSession stores a verified session for number and returns its id hash.
func verifiedSession(t *testing.T, db *store.DB, number phone.Hash) [32]byte {
	t.Helper()
	var id [32]byte
	copy(id[:], random(32))
	ctx := context.Background()
	if err := db.CreateSession(ctx, sessionFor(id, number)); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkVerified(ctx, id, 0, now); err != nil {
		t.Fatal(err)
	}
	return id
}

func sessionFor(id [32]byte, number phone.Hash) verify.Session {
	return verify.Session{IDHash: id, Number: number, Expires: now.Add(time.Hour)}
}

func registration(t *testing.T, db *store.DB, number phone.Hash, nPre int) accounts.StoredRegistration {
	return accounts.StoredRegistration{
		Session: verifiedSession(t, db, number), Number: number, IdentityKey: ecKey(), Day: today(),
		Device: accounts.NewDevice{
			RegistrationID: 42, Credential: random(accounts.HashedSize),
			SignedPreKey: keys.SignedPreKey{ID: 1, PublicKey: ecKey(), Signature: sig()},
			LastResort:   kemKey(1),
			PreKeys:      preKeys(1, nPre), KEMPreKeys: kemPreKeys(1, nPre),
		},
	}
}

func register(t *testing.T, db *store.DB, nPre int) (uuid.UUID, accounts.StoredRegistration) {
	t.Helper()
	r := registration(t, db, numberHash(), nPre)
	id, err := db.Register(context.Background(), r, now)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return id, r
}

func testMigrate(t *testing.T, db *store.DB) {
	n, err := db.Migrate(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("second Migrate = %d, %v; want 0, nil", n, err)
	}
}

func testSessions(t *testing.T, db *store.DB) {
	ctx := context.Background()
	var id [32]byte
	copy(id[:], random(32))
	if _, err := db.Session(ctx, id, now); !errors.Is(err, verify.ErrNotFound) {
		t.Fatalf("missing session: err = %v", err)
	}
	number := numberHash()
	if err := db.CreateSession(ctx, verify.Session{IDHash: id, Number: number, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	code := random(32)
	if err := db.ReserveSend(ctx, id, 0, now, now.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.SetCode(ctx, id, 1, code, "", now.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The code of an earlier send is not stored over a later send's.
	if err := db.SetCode(ctx, id, 0, random(32), "", now.Add(10*time.Minute)); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("SetCode for an earlier send: err = %v", err)
	}
	// A send is refused before the next is due, or when another was counted.
	if err := db.ReserveSend(ctx, id, 1, now.Add(29*time.Second), now.Add(time.Minute)); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("send before it is due: err = %v", err)
	}
	if err := db.ReserveSend(ctx, id, 0, now.Add(31*time.Second), now.Add(time.Minute)); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("send on a stale count: err = %v", err)
	}
	s, err := db.Session(ctx, id, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Number != number || !bytes.Equal(s.CodeHash, code) || s.Sends != 1 || !s.CodeExpires.Equal(now.Add(10*time.Minute)) ||
		!s.NextSend.Equal(now.Add(30*time.Second)) || !s.Verified.IsZero() {
		t.Errorf("session read back wrong: %+v", s)
	}
	// The attempt is counted and the code read in one step.
	counted, err := db.ReserveAttempt(ctx, id, 5, now)
	if err != nil || counted.Attempts != 1 || !bytes.Equal(counted.CodeHash, code) || counted.Sends != 1 {
		t.Errorf("ReserveAttempt = %+v, %v; want the stored code, 1 send, 1 attempt", counted, err)
	}
	// Success is recorded only against the send whose code was checked.
	if err := db.MarkVerified(ctx, id, 0, now); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("MarkVerified for an earlier send: err = %v, want ErrNotFound", err)
	}
	if err := db.MarkVerified(ctx, id, 1, now); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkVerified(ctx, id, 1, now); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("MarkVerified twice: err = %v, want ErrNotFound", err)
	}
	if err := db.SetCode(ctx, id, 1, code, "", now.Add(10*time.Minute)); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("SetCode on a verified session: err = %v", err)
	}
	s, _ = db.Session(ctx, id, now)
	if s.Verified.IsZero() || s.CodeHash != nil {
		t.Errorf("after MarkVerified: verified=%v code=%x, want verified and code forgotten", s.Verified, s.CodeHash)
	}
	if _, err := db.Session(ctx, id, now.Add(time.Hour)); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("expired session returned: err = %v", err)
	}
	n, err := db.DeleteExpiredSessions(ctx, now.Add(time.Hour))
	if err != nil || n != 1 {
		t.Errorf("DeleteExpiredSessions = %d, %v; want 1", n, err)
	}
	if err := db.SetCode(ctx, id, 1, code, "", now); !errors.Is(err, verify.ErrNotFound) {
		t.Errorf("SetCode on deleted session: err = %v", err)
	}
}

// inParallel makes n calls of f at once (f gets the call's index) and
// returns how many succeeded; a call failing with anything but refused
// fails the test.
func inParallel(t *testing.T, n int, refused error, f func(i int) error) (succeeded int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Go(func() {
			err := f(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				succeeded++
			case !errors.Is(err, refused):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	return succeeded
}

// testSendsAreAtomic: parallel resends that read the same session state
// get exactly one code sent between them.
func testSendsAreAtomic(t *testing.T, db *store.DB) {
	ctx := context.Background()
	var id [32]byte
	copy(id[:], random(32))
	if err := db.CreateSession(ctx, verify.Session{IDHash: id, Number: numberHash(), Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	granted := inParallel(t, 20, verify.ErrNotFound, func(int) error {
		return db.ReserveSend(ctx, id, 0, now, now.Add(time.Minute))
	})
	if s, _ := db.Session(ctx, id, now); granted != 1 || s.Sends != 1 {
		t.Errorf("20 parallel sends on one session: %d granted, %d counted", granted, s.Sends)
	}
}

func testAttemptsAtomic(t *testing.T, db *store.DB) {
	ctx := context.Background()
	var id [32]byte
	copy(id[:], random(32))
	if err := db.CreateSession(ctx, verify.Session{IDHash: id, Number: numberHash(), Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	granted := inParallel(t, 20, verify.ErrNoAttemptsLeft, func(int) error {
		_, err := db.ReserveAttempt(ctx, id, 5, now)
		return err
	})
	if granted != 5 {
		t.Errorf("20 parallel attempts with a limit of 5: %d granted", granted)
	}
}

func testRegister(t *testing.T, db *store.DB) {
	ctx := context.Background()
	number := numberHash()
	r := registration(t, db, number, 3)
	id, err := db.Register(ctx, r, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(ctx, r, now); !errors.Is(err, accounts.ErrSessionUsed) {
		t.Errorf("session reused: err = %v", err)
	}
	a, err := db.AccountByNumber(ctx, number)
	if err != nil || a.ID != id || !a.IdentityKey.Equal(r.IdentityKey) || a.LockHash != nil || a.LastSeenDay != today() {
		t.Fatalf("AccountByNumber = %+v, %v", a, err)
	}
	if b, err := db.Account(ctx, id); err != nil || b.ID != id {
		t.Errorf("Account = %+v, %v", b, err)
	}
	if _, err := db.Account(ctx, uuid.New()); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("unknown account: err = %v", err)
	}
	cred, seen, err := db.DeviceCredential(ctx, id, accounts.PrimaryDevice)
	if err != nil || !bytes.Equal(cred, r.Device.Credential) || seen != today() {
		t.Errorf("DeviceCredential = %x, %d, %v", cred, seen, err)
	}
	c, err := db.CountPreKeys(ctx, id, 1)
	if err != nil || c != (prekeys.Counts{EC: 3, KEM: 3}) {
		t.Errorf("CountPreKeys = %+v, %v", c, err)
	}

	// An unverified or expired session cannot register.
	var unverified [32]byte
	copy(unverified[:], random(32))
	other := numberHash()
	if err := db.CreateSession(ctx, verify.Session{IDHash: unverified, Number: other, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r2 := registration(t, db, other, 0)
	r2.Session = unverified
	if _, err := db.Register(ctx, r2, now); !errors.Is(err, accounts.ErrSessionUsed) {
		t.Errorf("unverified session: err = %v", err)
	}
	r3 := registration(t, db, other, 0)
	if _, err := db.Register(ctx, r3, now.Add(2*time.Hour)); !errors.Is(err, accounts.ErrSessionUsed) {
		t.Errorf("expired session: err = %v", err)
	}
	// A session verified for one number cannot register another.
	r4 := registration(t, db, other, 0)
	r4.Number = numberHash()
	if _, err := db.Register(ctx, r4, now); !errors.Is(err, accounts.ErrSessionUsed) {
		t.Errorf("session for another number: err = %v", err)
	}
	if _, err := db.AccountByNumber(ctx, other); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("failed registrations created an account: %v", err)
	}
}

// testTouchDuringReRegistration: a device's requests mark it seen while
// its number registers again; neither may fail (on PostgreSQL, locking the
// device and the account in opposite orders deadlocked).
func testTouchDuringReRegistration(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 0)
	regs := make([]accounts.StoredRegistration, 30)
	for i := range regs {
		regs[i] = registration(t, db, r.Number, 0)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, r := range regs {
			if _, err := db.Register(ctx, r, now); err != nil {
				t.Errorf("re-register: %v", err)
				return
			}
		}
	})
	wg.Go(func() {
		for day := today() + 1; day < today()+600; day++ {
			if err := db.TouchDevice(ctx, id, 1, day); err != nil {
				t.Errorf("touch: %v", err)
				return
			}
		}
	})
	wg.Wait()
}

func testReRegister(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 5)
	if err := db.SetRegistrationLock(ctx, id, random(accounts.HashedSize)); err != nil {
		t.Fatal(err)
	}
	r2 := registration(t, db, r.Number, 2)
	r2.Lock = func(accounts.Account) accounts.LockDecision { return accounts.LockDecision{Keep: true} }
	id2, err := db.Register(ctx, r2, now)
	if err != nil {
		t.Fatal(err)
	}
	if id2 != id {
		t.Errorf("re-registration changed the account id: %s → %s", id, id2)
	}
	a, _ := db.Account(ctx, id)
	if !a.IdentityKey.Equal(r2.IdentityKey) || a.LockHash == nil {
		t.Errorf("after re-registration with lock kept: identity replaced=%v lock kept=%v", a.IdentityKey.Equal(r2.IdentityKey), a.LockHash != nil)
	}
	cred, _, _ := db.DeviceCredential(ctx, id, 1)
	if !bytes.Equal(cred, r2.Device.Credential) {
		t.Error("old device credential still valid after re-registration")
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != (prekeys.Counts{EC: 2, KEM: 2}) {
		t.Errorf("old prekeys survived re-registration: %+v", c)
	}
	r3 := registration(t, db, r.Number, 0)
	if _, err := db.Register(ctx, r3, now); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Account(ctx, id); a.LockHash != nil {
		t.Error("lock survived a re-registration that did not keep it")
	}
}

func testLock(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 0)
	lock := random(accounts.HashedSize)
	if err := db.SetRegistrationLock(ctx, id, lock); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	attempt := func(d accounts.LockDecision, day int) (accounts.StoredRegistration, accounts.Account, error) {
		t.Helper()
		rr := registration(t, db, r.Number, 0)
		rr.Day = day
		var seen accounts.Account
		rr.Lock = func(a accounts.Account) accounts.LockDecision { seen = a; return d }
		_, err := db.Register(ctx, rr, now)
		return rr, seen, err
	}
	// A refusal without a guess changes nothing, not even the session.
	rr, seen, err := attempt(accounts.LockDecision{Err: refuse}, today())
	if !errors.Is(err, refuse) || seen.ID != id || !bytes.Equal(seen.LockHash, lock) {
		t.Fatalf("refusal: err = %v, lock callback saw %+v", err, seen)
	}
	rr.Lock = nil
	if _, err := db.Register(ctx, rr, now); err != nil { // the session is still usable
		t.Fatalf("session after a refusal without a guess: %v", err)
	}
	if err := db.SetRegistrationLock(ctx, id, lock); err != nil {
		t.Fatal(err)
	}
	// Each wrong guess is counted for its day and uses up its session.
	for want := 1; want <= 3; want++ {
		rr, seen, err = attempt(accounts.LockDecision{Err: refuse, Guessed: true}, today())
		if !errors.Is(err, refuse) || seen.LockFailures != want-1 {
			t.Fatalf("guess %d: err = %v, callback saw %d failures", want, err, seen.LockFailures)
		}
		rr.Lock = nil
		if _, err := db.Register(ctx, rr, now); !errors.Is(err, accounts.ErrSessionUsed) {
			t.Fatalf("session after a wrong guess: err = %v", err)
		}
	}
	if a, _ := db.Account(ctx, id); a.LockFailures != 3 || a.LockFailureDay != today() {
		t.Errorf("after 3 guesses: %d failures on day %d", a.LockFailures, a.LockFailureDay)
	}
	if _, _, err := attempt(accounts.LockDecision{Err: refuse, Guessed: true}, today()+1); !errors.Is(err, refuse) {
		t.Fatal(err)
	}
	a, _ := db.Account(ctx, id)
	if !bytes.Equal(a.LockHash, lock) || a.LockFailures != 1 || a.LockFailureDay != today()+1 {
		t.Errorf("account lock state = %x %d %d", a.LockHash, a.LockFailures, a.LockFailureDay)
	}
	// The right token keeps the lock and resets the count.
	if _, _, err := attempt(accounts.LockDecision{Keep: true}, today()+1); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Account(ctx, id); !bytes.Equal(a.LockHash, lock) || a.LockFailures != 0 {
		t.Errorf("after the right token: lock %x, %d failures", a.LockHash, a.LockFailures)
	}
	if err := db.SetRegistrationLock(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Account(ctx, id); a.LockHash != nil {
		t.Error("lock not cleared")
	}
	if err := db.SetRegistrationLock(ctx, uuid.New(), lock); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("lock on unknown account: err = %v", err)
	}
}

// testLockGuessesAreAtomic races wrong registration-lock guesses, each on
// its own verified session, against a limit checked by the lock callback:
// Register must hand each callback the count as it is after the previous
// guesses commit, so exactly the limit is evaluated.
func testLockGuessesAreAtomic(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 0)
	if err := db.SetRegistrationLock(ctx, id, random(accounts.HashedSize)); err != nil {
		t.Fatal(err)
	}
	const limit, guesses = 5, 20
	refuse := errors.New("refused")
	regs := make([]accounts.StoredRegistration, guesses)
	for i := range regs {
		regs[i] = registration(t, db, r.Number, 0)
	}
	var mu sync.Mutex
	evaluated := 0
	var wg sync.WaitGroup
	for i := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			regs[i].Lock = func(a accounts.Account) accounts.LockDecision {
				if a.LockFailureDay == today() && a.LockFailures >= limit {
					return accounts.LockDecision{Err: refuse}
				}
				mu.Lock()
				evaluated++
				mu.Unlock()
				return accounts.LockDecision{Err: refuse, Guessed: true}
			}
			if _, err := db.Register(ctx, regs[i], now); !errors.Is(err, refuse) {
				t.Errorf("guess: err = %v", err)
			}
		}()
	}
	wg.Wait()
	if a, _ := db.Account(ctx, id); evaluated != limit || a.LockFailures != limit {
		t.Errorf("%d parallel guesses with a limit of %d: %d evaluated, %d counted", guesses, limit, evaluated, a.LockFailures)
	}
}

func testDevices(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, _ := register(t, db, 0)
	ds, err := db.Devices(ctx, id)
	if err != nil || len(ds) != 1 || ds[0].ID != 1 || ds[0].RegistrationID != 42 || ds[0].CreatedDay != today() {
		t.Fatalf("Devices = %+v, %v", ds, err)
	}
	if err := db.TouchDevice(ctx, id, 1, today()+3); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchDevice(ctx, id, 1, today()+1); err != nil { // never moves back
		t.Fatal(err)
	}
	_, seen, _ := db.DeviceCredential(ctx, id, 1)
	a, _ := db.Account(ctx, id)
	if seen != today()+3 || a.LastSeenDay != today()+3 {
		t.Errorf("last seen device=%d account=%d, want %d", seen, a.LastSeenDay, today()+3)
	}
	if err := db.RemoveDevice(ctx, id, 2); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("remove missing device: err = %v", err)
	}
	if _, _, err := db.DeviceCredential(ctx, id, 2); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("missing device credential: err = %v", err)
	}
	if err := db.RemoveDevice(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.DeviceCredential(ctx, id, 1); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("removed device still authenticates: err = %v", err)
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != (prekeys.Counts{}) {
		t.Errorf("removed device's prekeys remain: %+v", c)
	}
}

func testDeleteAccount(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, _ := register(t, db, 4)
	if err := db.DeleteAccount(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteAccount(ctx, id); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("second delete: err = %v", err)
	}
	for _, table := range db.Tables() {
		rows, err := db.DumpTable(ctx, table)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if table != "verification_sessions" {
				t.Errorf("%s still holds %v after the only account was deleted", table, r)
			}
		}
	}
	if _, err := db.ClaimBundle(ctx, id, prekeys.AllDevices); !errors.Is(err, prekeys.ErrNotFound) {
		t.Errorf("bundle of deleted account: err = %v", err)
	}
}

func testStoreKeys(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 3)
	newSPK := keys.SignedPreKey{ID: 2, PublicKey: ecKey(), Signature: sig()}
	// Key id 3 is already pooled: the whole upload must fail, signed prekey included.
	err := db.StoreKeys(ctx, id, 1, keys.Upload{SignedPreKey: &newSPK, PreKeys: preKeys(3, 2)})
	if !errors.Is(err, keys.ErrDuplicateID) {
		t.Fatalf("duplicate pooled id: err = %v", err)
	}
	b, err := db.ClaimBundle(ctx, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Devices[0].SignedPreKey != r.Device.SignedPreKey {
		t.Error("failed upload replaced the signed prekey")
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c.EC != 2 {
		t.Errorf("failed upload changed the pool: %+v", c)
	}
	if err := db.StoreKeys(ctx, id, 1, keys.Upload{SignedPreKey: &newSPK, PreKeys: preKeys(10, 5), KEMPreKeys: kemPreKeys(10, 1)}); err != nil {
		t.Fatal(err)
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != (prekeys.Counts{EC: 7, KEM: 3}) {
		t.Errorf("after upload: %+v", c)
	}
	b, _ = db.ClaimBundle(ctx, id, 1)
	if b.Devices[0].SignedPreKey != newSPK {
		t.Error("signed prekey not replaced")
	}
	// A last-resort bundle claims nothing.
	before, _ := db.CountPreKeys(ctx, id, 1)
	lr, err := db.LastResortBundle(ctx, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := lr.Devices[0]; d.PreKey != nil || !d.LastResort || d.SignedPreKey != newSPK {
		t.Errorf("last-resort bundle: %+v", d)
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != before {
		t.Errorf("a last-resort bundle claimed keys: %+v then %+v", before, c)
	}
	if _, err := db.LastResortBundle(ctx, uuid.New(), prekeys.AllDevices); !errors.Is(err, prekeys.ErrNotFound) {
		t.Errorf("last-resort bundle of an unknown account: err = %v", err)
	}
	// Replacing the KEM pool leaves only the new keys, EC keys untouched.
	before, _ = db.CountPreKeys(ctx, id, 1)
	if err := db.StoreKeys(ctx, id, 1, keys.Upload{ReplaceKEMPreKeys: true, KEMPreKeys: kemPreKeys(50, 2)}); err != nil {
		t.Fatal(err)
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != (prekeys.Counts{EC: before.EC, KEM: 2}) {
		t.Errorf("after replacing the KEM pool (had %+v): %+v", before, c)
	}
	b, _ = db.ClaimBundle(ctx, id, 1)
	if got := b.Devices[0].KEMPreKey.ID; got != 50 && got != 51 {
		t.Errorf("claimed KEM key %d after the pool was replaced by 50 and 51", got)
	}
	if err := db.StoreKeys(ctx, id, 9, keys.Upload{PreKeys: preKeys(1, 1)}); !errors.Is(err, keys.ErrNoDevice) {
		t.Errorf("upload for missing device: err = %v", err)
	}
	// The pool cap holds across uploads.
	for from := 100; ; from += keys.MaxPreKeysPerUpload {
		err := db.StoreKeys(ctx, id, 1, keys.Upload{PreKeys: preKeys(from, keys.MaxPreKeysPerUpload)})
		if errors.Is(err, keys.ErrTooMany) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if from > 2*keys.MaxPoolSize {
			t.Fatal("pool grew past its cap")
		}
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c.EC > keys.MaxPoolSize {
		t.Errorf("pool holds %d keys, cap %d", c.EC, keys.MaxPoolSize)
	}
}

// testPoolCapConcurrent uploads from many connections at once, each
// upload fitting under the cap alone: the pool must still end within it.
func testPoolCapConcurrent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, _ := register(t, db, 0)
	const uploads = 2 * keys.MaxPoolSize / keys.MaxPreKeysPerUpload
	stored := inParallel(t, uploads, keys.ErrTooMany, func(i int) error {
		return db.StoreKeys(ctx, id, 1, keys.Upload{KEMPreKeys: kemPreKeys(1000+i*keys.MaxPreKeysPerUpload, keys.MaxPreKeysPerUpload)})
	})
	c, err := db.CountPreKeys(ctx, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c.KEM > keys.MaxPoolSize || c.KEM != stored*keys.MaxPreKeysPerUpload {
		t.Errorf("%d parallel uploads of %d: %d accepted, pool holds %d, cap %d", uploads, keys.MaxPreKeysPerUpload, stored, c.KEM, keys.MaxPoolSize)
	}
}

func testClaim(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, r := register(t, db, 2)
	for i, want := range []uint32{1, 2} {
		b, err := db.ClaimBundle(ctx, id, prekeys.AllDevices)
		if err != nil {
			t.Fatal(err)
		}
		if !b.IdentityKey.Equal(r.IdentityKey) || len(b.Devices) != 1 {
			t.Fatalf("bundle %d = %+v", i, b)
		}
		d := b.Devices[0]
		if d.DeviceID != 1 || d.RegistrationID != 42 || d.PreKey == nil || d.PreKey.ID != want ||
			d.PreKey.PublicKey != r.Device.PreKeys[want-1].PublicKey || d.LastResort || d.KEMPreKey.ID != want ||
			!bytes.Equal(d.KEMPreKey.PublicKey, r.Device.KEMPreKeys[want-1].PublicKey) {
			t.Errorf("claim %d: got %+v", i, d)
		}
	}
	b, err := db.ClaimBundle(ctx, id, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := b.Devices[0]
	if d.PreKey != nil || !d.LastResort || d.KEMPreKey.ID != r.Device.LastResort.ID ||
		!bytes.Equal(d.KEMPreKey.PublicKey, r.Device.LastResort.PublicKey) || d.SignedPreKey != r.Device.SignedPreKey {
		t.Errorf("empty pools: got %+v, want no one-time EC key and the last-resort KEM key", d)
	}
	if _, err := db.ClaimBundle(ctx, id, 2); !errors.Is(err, prekeys.ErrNotFound) {
		t.Errorf("missing device: err = %v", err)
	}
	if _, err := db.ClaimBundle(ctx, uuid.New(), prekeys.AllDevices); !errors.Is(err, prekeys.ErrNotFound) {
		t.Errorf("missing account: err = %v", err)
	}
}

func testConcurrentClaims(t *testing.T, db *store.DB) {
	ctx := context.Background()
	id, _ := register(t, db, 10)
	const fetches = 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	ec, kem := map[uint32]int{}, map[uint32]int{}
	fallbacks := 0
	for range fetches {
		wg.Go(func() {
			b, err := db.ClaimBundle(ctx, id, prekeys.AllDevices)
			if err != nil {
				t.Error(err)
				return
			}
			d := b.Devices[0]
			mu.Lock()
			defer mu.Unlock()
			if d.PreKey != nil {
				ec[d.PreKey.ID]++
			} else {
				fallbacks++
			}
			if !d.LastResort {
				kem[d.KEMPreKey.ID]++
			}
		})
	}
	wg.Wait()
	if len(ec) != 10 || len(kem) != 10 || fallbacks != fetches-10 {
		t.Errorf("%d fetches of a pool of 10: %d distinct EC keys, %d distinct KEM keys, %d fallbacks", fetches, len(ec), len(kem), fallbacks)
	}
	for id, n := range ec {
		if n != 1 {
			t.Errorf("EC prekey %d handed out %d times", id, n)
		}
	}
	for id, n := range kem {
		if n != 1 {
			t.Errorf("KEM prekey %d handed out %d times", id, n)
		}
	}
	if c, _ := db.CountPreKeys(ctx, id, 1); c != (prekeys.Counts{}) {
		t.Errorf("pool not empty after claims: %+v", c)
	}
}

// UpTo is dialect d with only its first n migrations, for tests of what a
// later migration does to a database in use.
func UpTo(t testing.TB, d *store.Dialect, n int) *store.Dialect {
	t.Helper()
	ms, err := store.LoadMigrations(d.Migrations)
	if err != nil {
		t.Fatal(err)
	}
	sub := fstest.MapFS{}
	for _, m := range ms[:n] {
		sub[m.Name] = &fstest.MapFile{Data: []byte(m.SQL)}
	}
	d.Migrations = sub
	return d
}
