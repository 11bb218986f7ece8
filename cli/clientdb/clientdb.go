// Package clientdb is the parley client's local database: one SQLite file
// per account holding its identity, Signal sessions and prekeys, the people
// it talks to and its message history.
//
// Secret columns (private keys, sessions, the device credential, message
// bodies) are sealed with the account's at-rest key before they reach the
// file; the Sealer binds each value to its table and row, so sealed values
// cannot be swapped between rows. Contacts' numbers are found through keyed
// indexes, and their account ids and group ids are stored as keyed
// pseudonyms: the file alone does not say whom the account talks to.
// Everything runs in transactions (BEGIN IMMEDIATE), so two parley
// processes on one account serialise instead of corrupting each other's
// ratchets.
package clientdb

import (
	"context"
	"database/sql"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// Sealer encrypts values at rest. aad names the value's place (table and
// row); Open fails if the ciphertext was altered or moved. Index is a keyed
// hash of value for purpose, under a key of the Sealer's own: the way to
// find a row by a value that is stored only sealed (at least 16 bytes).
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(ciphertext, aad []byte) ([]byte, error)
	Index(purpose string, value []byte) []byte
}

// ErrNotFound reports a missing row.
var ErrNotFound = errors.New("not found")

// DB is an open client database.
type DB struct {
	sql  *sql.DB
	seal Sealer
}

// Open opens (creating with mode 0600 if needed) the database at path and
// applies pending migrations.
func Open(ctx context.Context, path string, s Sealer) (*DB, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(30000)" +
		"&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)&_pragma=secure_delete(ON)&_txlock=immediate"
	d, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	d.SetMaxOpenConns(1)
	db := &DB{sql: d, seal: s}
	if err := db.migrate(ctx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	// The WAL and shared-memory files appear on first write; keep them private too.
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, errors.Join(err, d.Close())
		}
	}
	return db, nil
}

// Close closes the database.
func (db *DB) Close() error { return db.sql.Close() }

func (db *DB) migrate(ctx context.Context) error {
	rewrote := false
	err := db.Update(ctx, func(tx *Tx) error {
		var version int
		if err := tx.tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
			return err
		}
		names, err := fs.Glob(migrations, "migrations/*.sql")
		if err != nil {
			return err
		}
		slices.Sort(names)
		numbers := make([]int, len(names))
		for i, name := range names {
			if numbers[i], err = strconv.Atoi(strings.SplitN(filepath.Base(name), "_", 2)[0]); err != nil {
				return fmt.Errorf("migration %s: bad name", name)
			}
		}
		if known := numbers[len(numbers)-1]; version > known {
			return fmt.Errorf("this database was written by a newer parley (schema %d; this one knows %d): use that version", version, known)
		}
		for i, name := range names {
			n := numbers[i]
			if n <= version {
				continue
			}
			body, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("migration %s: %w", name, err)
			}
			if step, ok := afterMigration[n]; ok {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("migration %s: %w", name, err)
				}
				rewrote = true
			}
			if _, err := tx.tx.ExecContext(ctx, `PRAGMA user_version = `+strconv.Itoa(n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || !rewrote {
		return err
	}
	// A step replaced clear values with sealed ones; the old bytes may
	// linger in free pages and in the WAL's page images until both are
	// rewritten.
	if _, err := db.sql.ExecContext(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("vacuum after migrating: %w", err)
	}
	if _, err := db.sql.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint after migrating: %w", err)
	}
	return nil
}

// Tx is a transaction; every read and write goes through one.
type Tx struct {
	tx   *sql.Tx
	seal Sealer
}

// Update runs fn in a write transaction, committing if it returns nil.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(&Tx{tx: tx, seal: db.seal}); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (tx *Tx) sealed(v []byte, place ...string) []byte {
	return tx.seal.Seal(v, []byte(strings.Join(place, "|")))
}

func (tx *Tx) open(v []byte, place ...string) ([]byte, error) {
	p, err := tx.seal.Open(v, []byte(strings.Join(place, "|")))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(place, " "), err)
	}
	return p, nil
}

// Value returns a meta value, opening it if it was stored sealed, or
// ErrNotFound.
func (tx *Tx) Value(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	var sealed bool
	err := tx.tx.QueryRowContext(ctx, `SELECT value, sealed FROM meta WHERE key = ?`, key).Scan(&v, &sealed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, ErrNotFound
	case err != nil:
		return nil, err
	case sealed:
		return tx.open(v, "meta", key)
	}
	return v, nil
}

// SetValue stores a meta value, sealed if secret.
func (tx *Tx) SetValue(ctx context.Context, key string, v []byte, secret bool) error {
	if secret {
		v = tx.sealed(v, "meta", key)
	}
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO meta (key, value, sealed) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, sealed = excluded.sealed`, key, v, secret)
	return err
}

// DeleteValue removes a meta value.
func (tx *Tx) DeleteValue(ctx context.Context, key string) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, key)
	return err
}

// Trust levels, as signal-cli names them.
const (
	Untrusted         = 0
	TrustedUnverified = 1
	TrustedVerified   = 2
)

// Recipient is someone we talk to.
type Recipient struct {
	Account     string // account id: the Signal address name
	Number      string // E.164, "" if unknown
	IdentityKey []byte // nil until first seen
	Trust       int
	KeyAddedMS  int64
}

// A recipient's number and identity (key, trust, when the key was added)
// are sealed, bound to the recipient's account id; the number is found by
// its keyed index.
const recipientColumns = `account_id, refs.sealed, number_sealed, identity_sealed FROM recipients LEFT JOIN refs ON refs.ref = recipients.account_id`

func (tx *Tx) scanRecipient(row interface{ Scan(...any) error }) (Recipient, error) {
	var r Recipient
	var ref string
	var account, number, identity []byte
	err := row.Scan(&ref, &account, &number, &identity)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	if r.Account, err = tx.recall(ref, account); err != nil {
		return r, err
	}
	if number != nil {
		n, err := tx.open(number, "recipient number", r.Account)
		if err != nil {
			return r, err
		}
		r.Number = string(n)
	}
	if identity != nil {
		b, err := tx.open(identity, "recipient identity", r.Account)
		if err != nil {
			return r, err
		}
		if len(b) < 9 {
			return r, fmt.Errorf("recipient identity of %s: %d bytes", r.Account, len(b))
		}
		r.Trust, r.KeyAddedMS = int(b[0]), int64(binary.BigEndian.Uint64(b[1:9]))
		if len(b) > 9 {
			r.IdentityKey = b[9:]
		}
	}
	return r, nil
}

// numberIndex is the keyed index of a number.
func (tx *Tx) numberIndex(number string) []byte {
	return tx.seal.Index("recipient number", []byte(number))
}

// sealedIdentity is a recipient's sealed trust, key date and identity key.
func (tx *Tx) sealedIdentity(r Recipient) []byte {
	b := make([]byte, 9, 9+len(r.IdentityKey))
	b[0] = byte(r.Trust)
	binary.BigEndian.PutUint64(b[1:9], uint64(r.KeyAddedMS))
	return tx.sealed(append(b, r.IdentityKey...), "recipient identity", r.Account)
}

// Recipient returns the recipient with the account id, or ErrNotFound.
func (tx *Tx) Recipient(ctx context.Context, account string) (Recipient, error) {
	return tx.scanRecipient(tx.tx.QueryRowContext(ctx, `SELECT `+recipientColumns+` WHERE account_id = ?`, tx.ref(account)))
}

// RecipientByNumber returns the recipient on number, or ErrNotFound.
func (tx *Tx) RecipientByNumber(ctx context.Context, number string) (Recipient, error) {
	return tx.scanRecipient(tx.tx.QueryRowContext(ctx, `SELECT `+recipientColumns+` WHERE number_index = ?`, tx.numberIndex(number)))
}

// Recipients lists every recipient, by number (those without one last).
func (tx *Tx) Recipients(ctx context.Context) ([]Recipient, error) {
	rows, err := tx.tx.QueryContext(ctx, `SELECT `+recipientColumns)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Recipient
	for rows.Next() {
		r, err := tx.scanRecipient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Recipient) int {
		switch {
		case a.Number == b.Number:
			return strings.Compare(a.Account, b.Account)
		case a.Number == "":
			return 1
		case b.Number == "":
			return -1
		}
		return strings.Compare(a.Number, b.Number)
	})
	return out, nil
}

// PutRecipient inserts or replaces a recipient. A number moving to another
// account (re-registration under a new id) is taken from the old row.
func (tx *Tx) PutRecipient(ctx context.Context, r Recipient) error {
	ref, err := tx.remember(ctx, r.Account)
	if err != nil {
		return err
	}
	var index, number any
	if r.Number != "" {
		idx := tx.numberIndex(r.Number)
		index, number = idx, tx.sealed([]byte(r.Number), "recipient number", r.Account)
		if _, err := tx.tx.ExecContext(ctx, `UPDATE recipients SET number_index = NULL, number_sealed = NULL
			WHERE number_index = ? AND account_id <> ?`, idx, ref); err != nil {
			return err
		}
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO recipients (account_id, number_index, number_sealed, identity_sealed) VALUES (?, ?, ?, ?)
		ON CONFLICT (account_id) DO UPDATE SET number_index = coalesce(excluded.number_index, recipients.number_index),
			number_sealed = coalesce(excluded.number_sealed, recipients.number_sealed), identity_sealed = excluded.identity_sealed`,
		ref, index, number, tx.sealedIdentity(r))
	return err
}

// Session returns the serialised session with a device, or ErrNotFound.
func (tx *Tx) Session(ctx context.Context, account string, device int) ([]byte, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT record FROM sessions WHERE account_id = ? AND device_id = ?`, tx.ref(account), device).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tx.open(v, "session", account, strconv.Itoa(device))
}

// PutSession stores the session with a device.
func (tx *Tx) PutSession(ctx context.Context, account string, device int, record []byte) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO sessions (account_id, device_id, record) VALUES (?, ?, ?)
		ON CONFLICT (account_id, device_id) DO UPDATE SET record = excluded.record`,
		tx.ref(account), device, tx.sealed(record, "session", account, strconv.Itoa(device)))
	return err
}

// DeleteSession forgets the session with a device.
func (tx *Tx) DeleteSession(ctx context.Context, account string, device int) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM sessions WHERE account_id = ? AND device_id = ?`, tx.ref(account), device)
	return err
}

// DeleteSessions forgets every session with an account (all: every session).
func (tx *Tx) DeleteSessions(ctx context.Context, account string, all bool) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM sessions WHERE account_id = ? OR ?`, tx.ref(account), all)
	return err
}

// SessionDevices lists the devices of an account we have sessions with.
func (tx *Tx) SessionDevices(ctx context.Context, account string) ([]int, error) {
	return column[int](ctx, tx, `SELECT device_id FROM sessions WHERE account_id = ? ORDER BY device_id`, tx.ref(account))
}

// PreKey returns a one-time prekey record, or ErrNotFound.
func (tx *Tx) PreKey(ctx context.Context, id uint32) ([]byte, error) {
	return tx.keyRecord(ctx, "prekeys", id)
}

// PutPreKey stores a one-time prekey record.
func (tx *Tx) PutPreKey(ctx context.Context, id uint32, record []byte) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT OR REPLACE INTO prekeys (id, record) VALUES (?, ?)`,
		id, tx.sealed(record, "prekeys", strconv.FormatUint(uint64(id), 10)))
	return err
}

// DeletePreKey removes a used one-time prekey.
func (tx *Tx) DeletePreKey(ctx context.Context, id uint32) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM prekeys WHERE id = ?`, id)
	return err
}

// SignedPreKey returns a signed prekey record, or ErrNotFound.
func (tx *Tx) SignedPreKey(ctx context.Context, id uint32) ([]byte, error) {
	return tx.keyRecord(ctx, "signed_prekeys", id)
}

// PutSignedPreKey stores a signed prekey record created at createdMS.
func (tx *Tx) PutSignedPreKey(ctx context.Context, id uint32, createdMS int64, record []byte) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT OR REPLACE INTO signed_prekeys (id, created_ms, record) VALUES (?, ?, ?)`,
		id, createdMS, tx.sealed(record, "signed_prekeys", strconv.FormatUint(uint64(id), 10)))
	return err
}

// SignedPreKeyIDs lists signed prekey ids with their creation times, oldest first.
func (tx *Tx) SignedPreKeyIDs(ctx context.Context) (ids []uint32, createdMS []int64, err error) {
	rows, err := tx.tx.QueryContext(ctx, `SELECT id, created_ms FROM signed_prekeys ORDER BY created_ms, id`)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id uint32
		var c int64
		if err := rows.Scan(&id, &c); err != nil {
			return nil, nil, err
		}
		ids, createdMS = append(ids, id), append(createdMS, c)
	}
	return ids, createdMS, rows.Err()
}

// DeleteSignedPreKey removes a signed prekey and the records of the
// last-resort Kyber key's uses with it.
func (tx *Tx) DeleteSignedPreKey(ctx context.Context, id uint32) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM signed_prekeys WHERE id = ?`, id)
	if err == nil {
		_, err = tx.tx.ExecContext(ctx, `DELETE FROM kyber_prekey_uses WHERE signed_prekey_id = ?`, id)
	}
	return err
}

// PutKEMPreKey stores the private key of a Kyber prekey published to the
// relay (the column is named seed: before PQXDH it held ML-KEM seeds).
func (tx *Tx) PutKEMPreKey(ctx context.Context, id uint32, lastResort bool, private []byte) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT OR REPLACE INTO kem_prekeys (id, last_resort, seed) VALUES (?, ?, ?)`,
		id, lastResort, tx.sealed(private, "kem_prekeys", strconv.FormatUint(uint64(id), 10)))
	return err
}

// KEMPreKey returns a Kyber prekey's private key and whether it is the
// last-resort key, or ErrNotFound.
func (tx *Tx) KEMPreKey(ctx context.Context, id uint32) (private []byte, lastResort bool, err error) {
	var v []byte
	err = tx.tx.QueryRowContext(ctx, `SELECT seed, last_resort FROM kem_prekeys WHERE id = ?`, id).Scan(&v, &lastResort)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, ErrNotFound
	}
	if err != nil {
		return nil, false, err
	}
	private, err = tx.open(v, "kem_prekeys", strconv.FormatUint(uint64(id), 10))
	return private, lastResort, err
}

// DeleteOneTimeKEMPreKey removes a used one-time Kyber prekey; the
// last-resort key is kept.
func (tx *Tx) DeleteOneTimeKEMPreKey(ctx context.Context, id uint32) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM kem_prekeys WHERE id = ? AND last_resort = 0`, id)
	return err
}

// RecordKyberUse records that the last-resort Kyber prekey kyberID was
// used with a signed prekey and base key; it reports false if that use was
// recorded before (a replayed PreKey message).
func (tx *Tx) RecordKyberUse(ctx context.Context, kyberID, signedID uint32, baseKey []byte) (bool, error) {
	res, err := tx.tx.ExecContext(ctx, `INSERT INTO kyber_prekey_uses (kyber_id, signed_prekey_id, base_key) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`, kyberID, signedID, baseKey)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DeleteKEMPreKeys removes every Kyber prekey, the last-resort one too.
func (tx *Tx) DeleteKEMPreKeys(ctx context.Context) error {
	return tx.DeleteKEMPreKeysUpTo(ctx, math.MaxUint32)
}

// DeleteKEMPreKeysUpTo removes the Kyber prekeys with ids up to id.
func (tx *Tx) DeleteKEMPreKeysUpTo(ctx context.Context, id uint32) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM kem_prekeys WHERE id <= ?`, id)
	return err
}

// KeyIDs lists the ids in a key table ("prekeys", "signed_prekeys").
func (tx *Tx) KeyIDs(ctx context.Context, table string) ([]uint32, error) {
	switch table {
	case "prekeys", "signed_prekeys":
	default:
		return nil, fmt.Errorf("no key table %q", table)
	}
	return column[uint32](ctx, tx, `SELECT id FROM `+table+` ORDER BY id`)
}

// DeleteAllSenderKeys forgets every group's sender keys and whom ours went
// to, so every member gets our (new) key again.
func (tx *Tx) DeleteAllSenderKeys(ctx context.Context) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM sender_keys`)
	if err == nil {
		_, err = tx.tx.ExecContext(ctx, `DELETE FROM sender_key_shared`)
	}
	return err
}

// CountSessions is how many sessions are stored.
func (tx *Tx) CountSessions(ctx context.Context) (int, error) {
	var n int
	err := tx.tx.QueryRowContext(ctx, `SELECT count(*) FROM sessions`).Scan(&n)
	return n, err
}

func (tx *Tx) keyRecord(ctx context.Context, table string, id uint32) ([]byte, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT record FROM `+table+` WHERE id = ?`, id).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tx.open(v, table, strconv.FormatUint(uint64(id), 10))
}

// MaxKeyID returns the highest id in a key table ("prekeys",
// "signed_prekeys", "kem_prekeys"), or 0.
func (tx *Tx) MaxKeyID(ctx context.Context, table string) (uint32, error) {
	switch table {
	case "prekeys", "signed_prekeys", "kem_prekeys":
	default:
		return 0, fmt.Errorf("no key table %q", table)
	}
	var id uint32
	err := tx.tx.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM `+table).Scan(&id)
	return id, err
}

// Message statuses.
const (
	StatusSent      = 0 // outgoing: accepted by the relay; incoming: received
	StatusDelivered = 1
	StatusRead      = 2
)

// Message is one entry of the history.
type Message struct {
	ID           int64
	Conversation string // the other party's account id
	Outgoing     bool
	SenderDevice int
	SentMS       int64
	ReceivedMS   int64
	Status       int
	Body         []byte // the encoded content, opaque here
	// ExpiresMS is when the message disappears (Unix ms; 0: never).
	ExpiresMS int64
}

// AddMessage appends m to the history and returns its id.
func (tx *Tx) AddMessage(ctx context.Context, m Message) (int64, error) {
	// The row id is not known before the insert, so the seal is bound to
	// the conversation and the sender's timestamp, which identify it.
	res, err := tx.tx.ExecContext(ctx, `INSERT INTO messages (conversation, outgoing, sender_device, sent_ms, received_ms, status, body, expires_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, tx.ref(m.Conversation), m.Outgoing, m.SenderDevice, m.SentMS, m.ReceivedMS, m.Status,
		tx.sealed(m.Body, "messages", m.Conversation, strconv.FormatInt(m.SentMS, 10)), m.ExpiresMS)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// Messages returns a conversation's last limit messages, oldest first.
func (tx *Tx) Messages(ctx context.Context, conversation string, limit int) ([]Message, error) {
	rows, err := tx.tx.QueryContext(ctx, `SELECT id, outgoing, sender_device, sent_ms, received_ms, status, body, expires_ms
		FROM (SELECT * FROM messages WHERE conversation = ? ORDER BY sent_ms DESC, id DESC LIMIT ?) ORDER BY sent_ms, id`, tx.ref(conversation), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m := Message{Conversation: conversation}
		if err := rows.Scan(&m.ID, &m.Outgoing, &m.SenderDevice, &m.SentMS, &m.ReceivedMS, &m.Status, &m.Body, &m.ExpiresMS); err != nil {
			return nil, err
		}
		if m.Body, err = tx.open(m.Body, "messages", m.Conversation, strconv.FormatInt(m.SentMS, 10)); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RaiseStatus raises the status of our messages to conversation sent at
// the given timestamps (a receipt never lowers it) and returns how many changed.
func (tx *Tx) RaiseStatus(ctx context.Context, conversation string, sentMS []int64, status int) (int, error) {
	n := 0
	for _, ts := range sentMS {
		res, err := tx.tx.ExecContext(ctx, `UPDATE messages SET status = ? WHERE conversation = ? AND outgoing = 1 AND sent_ms = ? AND status < ?`,
			status, tx.ref(conversation), ts, status)
		if err != nil {
			return n, err
		}
		c, _ := res.RowsAffected()
		n += int(c)
	}
	return n, nil
}

// MarkSeen records an envelope's ciphertext hash with the envelope's id.
// If the hash was recorded before, it reports fresh false and the id
// recorded then.
func (tx *Tx) MarkSeen(ctx context.Context, hash []byte, envelopeID string, receivedMS int64) (fresh bool, firstID string, err error) {
	err = tx.tx.QueryRowContext(ctx, `SELECT envelope_id FROM seen_envelopes WHERE hash = ?`, hash).Scan(&firstID)
	switch {
	case err == nil:
		return false, firstID, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, "", err
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO seen_envelopes (hash, envelope_id, received_ms) VALUES (?, ?, ?)`, hash, envelopeID, receivedMS)
	return err == nil, envelopeID, err
}

// ForgetSeen drops hashes recorded before beforeMS (older than anything the
// relay may still redeliver).
func (tx *Tx) ForgetSeen(ctx context.Context, beforeMS int64) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM seen_envelopes WHERE received_ms < ?`, beforeMS)
	return err
}

// Bucket is a conversation's attachment bucket and the secrets that open it.
type Bucket struct {
	ID           string
	MemberSecret []byte
	AdminSecret  []byte
}

// Bucket returns the conversation's attachment bucket, or ErrNotFound.
func (tx *Tx) Bucket(ctx context.Context, conversation string) (Bucket, error) {
	var b Bucket
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT bucket_id, secrets FROM buckets WHERE conversation = ?`, tx.ref(conversation)).Scan(&b.ID, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return b, ErrNotFound
	}
	if err != nil {
		return b, err
	}
	s, err := tx.open(v, "bucket", conversation, b.ID)
	if err != nil {
		return b, err
	}
	switch len(s) {
	case 64:
		b.MemberSecret, b.AdminSecret = s[:32], s[32:]
	case 32: // a group member who is not the bucket's admin
		b.MemberSecret = s
	default:
		return b, fmt.Errorf("bucket secrets of %s: %d bytes", conversation, len(s))
	}
	return b, nil
}

// AdoptBucket makes b the conversation's bucket unless it already has one
// with a smaller id (so two sides that created buckets at once agree on
// one); the same bucket takes b's secrets (a rotated member secret). It
// reports whether b is now the conversation's bucket. AdminSecret may be
// nil (group members other than the bucket's creator).
func (tx *Tx) AdoptBucket(ctx context.Context, conversation string, b Bucket) (bool, error) {
	if len(b.MemberSecret) != 32 || (b.AdminSecret != nil && len(b.AdminSecret) != 32) {
		return false, errors.New("bucket secrets must be 32 bytes each")
	}
	res, err := tx.tx.ExecContext(ctx, `INSERT INTO buckets (conversation, bucket_id, secrets) VALUES (?, ?, ?)
		ON CONFLICT (conversation) DO UPDATE SET bucket_id = excluded.bucket_id, secrets = excluded.secrets
		WHERE excluded.bucket_id <= buckets.bucket_id`,
		tx.ref(conversation), b.ID, tx.sealed(append(slices.Clone(b.MemberSecret), b.AdminSecret...), "bucket", conversation, b.ID))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 1 {
		return n == 1, err
	}
	cur, err := tx.Bucket(ctx, conversation)
	return cur.ID == b.ID, err
}

// Timer returns a conversation's disappearing-message timer in seconds
// (0: off).
func (tx *Tx) Timer(ctx context.Context, conversation string) (int64, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT sealed FROM conversation_timers WHERE conversation = ?`, tx.ref(conversation)).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	b, err := tx.open(v, "timer", conversation)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("timer of %s: %d bytes", conversation, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// ProfileKey returns a contact's profile key, or ErrNotFound.
func (tx *Tx) ProfileKey(ctx context.Context, account string) ([]byte, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT sealed FROM profile_keys WHERE account_id = ?`, tx.ref(account)).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tx.open(v, "profile key", account)
}

// SetProfileKey records a contact's profile key.
func (tx *Tx) SetProfileKey(ctx context.Context, account string, key []byte) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO profile_keys (account_id, sealed) VALUES (?, ?)
		ON CONFLICT (account_id) DO UPDATE SET sealed = excluded.sealed`, tx.ref(account), tx.sealed(key, "profile key", account))
	return err
}

// SetTimer sets a conversation's timer (0 turns it off) and reports
// whether it changed.
func (tx *Tx) SetTimer(ctx context.Context, conversation string, seconds int64) (bool, error) {
	old, err := tx.Timer(ctx, conversation)
	if err != nil || old == seconds {
		return false, err
	}
	if seconds <= 0 {
		_, err = tx.tx.ExecContext(ctx, `DELETE FROM conversation_timers WHERE conversation = ?`, tx.ref(conversation))
	} else {
		_, err = tx.tx.ExecContext(ctx, `INSERT INTO conversation_timers (conversation, sealed) VALUES (?, ?)
			ON CONFLICT (conversation) DO UPDATE SET sealed = excluded.sealed`, tx.ref(conversation), tx.sealedTimer(conversation, seconds))
	}
	return err == nil, err
}

// SetMessageFiles records the files saved for a message, so they are
// deleted when it disappears.
func (tx *Tx) SetMessageFiles(ctx context.Context, id int64, files []string) error {
	b, err := json.Marshal(files)
	if err != nil {
		return err
	}
	_, err = tx.tx.ExecContext(ctx, `UPDATE messages SET files = ? WHERE id = ?`, tx.sealed(b, "message files", strconv.FormatInt(id, 10)), id)
	return err
}

// ExpireMessages deletes the messages that disappeared by nowMS and
// returns how many, with the files saved for them (for the caller to
// delete).
func (tx *Tx) ExpireMessages(ctx context.Context, nowMS int64) (int, []string, error) {
	rows, err := tx.tx.QueryContext(ctx, `SELECT id, files FROM messages WHERE expires_ms > 0 AND expires_ms <= ?`, nowMS)
	if err != nil {
		return 0, nil, err
	}
	var ids []int64
	var files []string
	for rows.Next() {
		var id int64
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			rows.Close()
			return 0, nil, err
		}
		ids = append(ids, id)
		if sealed != nil {
			b, err := tx.open(sealed, "message files", strconv.FormatInt(id, 10))
			var paths []string
			if err == nil {
				err = json.Unmarshal(b, &paths)
			}
			if err != nil {
				rows.Close()
				return 0, nil, err
			}
			files = append(files, paths...)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	for _, id := range ids {
		if _, err := tx.tx.ExecContext(ctx, `DELETE FROM messages WHERE id = ?`, id); err != nil {
			return 0, nil, err
		}
	}
	return len(ids), files, nil
}

// Group returns a group's sealed-at-rest state, or ErrNotFound.
func (tx *Tx) Group(ctx context.Context, id string) ([]byte, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT state FROM groups WHERE id = ?`, tx.ref(id)).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tx.open(v, "group", id)
}

// PutGroup stores a group's state.
func (tx *Tx) PutGroup(ctx context.Context, id string, state []byte) error {
	ref, err := tx.remember(ctx, id)
	if err != nil {
		return err
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO groups (id, state) VALUES (?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state`, ref, tx.sealed(state, "group", id))
	return err
}

// GroupIDs lists every group we know.
func (tx *Tx) GroupIDs(ctx context.Context) ([]string, error) {
	return tx.recallAll(ctx, `SELECT id, refs.sealed FROM groups LEFT JOIN refs ON refs.ref = groups.id`)
}

// SenderKey returns the sender key record of a member device in a group,
// or ErrNotFound.
func (tx *Tx) SenderKey(ctx context.Context, group, account string, device int) ([]byte, error) {
	var v []byte
	err := tx.tx.QueryRowContext(ctx, `SELECT record FROM sender_keys WHERE group_id = ? AND account_id = ? AND device_id = ?`,
		tx.ref(group), tx.ref(account), device).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tx.open(v, "sender key", group, account, strconv.Itoa(device))
}

// PutSenderKey stores a sender key record.
func (tx *Tx) PutSenderKey(ctx context.Context, group, account string, device int, record []byte) error {
	ref, err := tx.remember(ctx, group)
	if err != nil {
		return err
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO sender_keys (group_id, account_id, device_id, record) VALUES (?, ?, ?, ?)
		ON CONFLICT (group_id, account_id, device_id) DO UPDATE SET record = excluded.record`,
		ref, tx.ref(account), device, tx.sealed(record, "sender key", group, account, strconv.Itoa(device)))
	return err
}

// DeleteSenderKeys forgets the sender keys of account's devices in a group
// ("" : of every member).
func (tx *Tx) DeleteSenderKeys(ctx context.Context, group, account string) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM sender_keys WHERE group_id = ? AND (? = '' OR account_id = ?)`, tx.ref(group), account, tx.ref(account))
	return err
}

// SharedWith lists the members our current sender key for group went to.
func (tx *Tx) SharedWith(ctx context.Context, group string) ([]string, error) {
	return tx.recallAll(ctx, `SELECT account_id, refs.sealed FROM sender_key_shared LEFT JOIN refs ON refs.ref = sender_key_shared.account_id
		WHERE group_id = ?`, tx.ref(group))
}

// MarkShared records that account got our current sender key for group;
// UnmarkShared that it must get it again.
func (tx *Tx) MarkShared(ctx context.Context, group, account string) error {
	ref, err := tx.remember(ctx, account)
	if err != nil {
		return err
	}
	_, err = tx.tx.ExecContext(ctx, `INSERT INTO sender_key_shared (group_id, account_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, tx.ref(group), ref)
	return err
}

// UnmarkShared forgets that account ("": anyone) has our sender key.
func (tx *Tx) UnmarkShared(ctx context.Context, group, account string) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM sender_key_shared WHERE group_id = ? AND (? = '' OR account_id = ?)`, tx.ref(group), account, tx.ref(account))
	return err
}

// ReplaceBucket stores b as the conversation's bucket whatever it had (a
// rotated member secret).
func (tx *Tx) ReplaceBucket(ctx context.Context, conversation string, b Bucket) error {
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO buckets (conversation, bucket_id, secrets) VALUES (?, ?, ?)
		ON CONFLICT (conversation) DO UPDATE SET bucket_id = excluded.bucket_id, secrets = excluded.secrets`,
		tx.ref(conversation), b.ID, tx.sealed(append(slices.Clone(b.MemberSecret), b.AdminSecret...), "bucket", conversation, b.ID))
	return err
}

// DeleteBucket forgets the conversation's bucket (the next file creates a
// new one).
func (tx *Tx) DeleteBucket(ctx context.Context, conversation string) error {
	_, err := tx.tx.ExecContext(ctx, `DELETE FROM buckets WHERE conversation = ?`, tx.ref(conversation))
	return err
}

// AdoptGroupBucket records the bucket a group message shares: a device
// that holds the bucket's admin secret keeps its own record (it rotates the
// secret itself); any other takes the newest grant it receives.
func (tx *Tx) AdoptGroupBucket(ctx context.Context, group string, b Bucket) error {
	cur, err := tx.Bucket(ctx, group)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case cur.AdminSecret != nil:
		return nil
	}
	if len(b.MemberSecret) != 32 {
		return errors.New("bucket secrets must be 32 bytes each")
	}
	return tx.ReplaceBucket(ctx, group, Bucket{ID: b.ID, MemberSecret: b.MemberSecret})
}

// SenderKeyGroups lists the groups in which we hold a sender key of the
// member device.
func (tx *Tx) SenderKeyGroups(ctx context.Context, account string, device int) ([]string, error) {
	return tx.recallAll(ctx, `SELECT DISTINCT group_id, refs.sealed FROM sender_keys LEFT JOIN refs ON refs.ref = sender_keys.group_id
		WHERE account_id = ? AND device_id = ?`, tx.ref(account), device)
}

// ref is the pseudonym stored in place of an account or group id: a keyed
// hash, so rows are found by id without the id in the file. "" stays ""
// (the "anyone" of some deletes).
func (tx *Tx) ref(id string) string {
	if id == "" {
		return ""
	}
	return hex.EncodeToString(tx.seal.Index("ref", []byte(id))[:16])
}

// remember records id, sealed, under its pseudonym, which it returns: for
// the lists that name ids (recallAll).
func (tx *Tx) remember(ctx context.Context, id string) (string, error) {
	ref := tx.ref(id)
	_, err := tx.tx.ExecContext(ctx, `INSERT INTO refs (ref, sealed) VALUES (?, ?) ON CONFLICT (ref) DO NOTHING`,
		ref, tx.sealed([]byte(id), "ref", ref))
	return ref, err
}

// recall opens the id a pseudonym stands for (sealed: refs.sealed, nil when
// the refs row is missing).
func (tx *Tx) recall(ref string, sealed []byte) (string, error) {
	if sealed == nil {
		return "", fmt.Errorf("pseudonym %s: no id recorded for it", ref)
	}
	id, err := tx.open(sealed, "ref", ref)
	return string(id), err
}

// recallAll runs a query selecting pseudonyms and their sealed ids (an id
// column LEFT JOIN refs) and returns the ids, sorted.
func (tx *Tx) recallAll(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := tx.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ref string
		var sealed []byte
		if err := rows.Scan(&ref, &sealed); err != nil {
			return nil, err
		}
		id, err := tx.recall(ref, sealed)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out, rows.Err()
}

// column runs a query that selects one column and returns its values.
func column[T any](ctx context.Context, tx *Tx, query string, args ...any) ([]T, error) {
	rows, err := tx.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (tx *Tx) sealedTimer(conversation string, seconds int64) []byte {
	return tx.sealed(binary.BigEndian.AppendUint64(nil, uint64(seconds)), "timer", conversation)
}

// afterMigration are Go steps that run right after the numbered SQL
// migration, in the same transaction, for what SQL cannot do (sealing).
var afterMigration = map[int]func(context.Context, *Tx) error{
	6: sealMetadata,
	8: pseudonymise,
}

// idColumns are the columns holding account or group ids, which migration 8
// turned into pseudonyms.
var idColumns = []struct{ table, column string }{
	{"recipients", "account_id"}, {"sessions", "account_id"}, {"messages", "conversation"}, {"buckets", "conversation"},
	{"conversation_timers", "conversation"}, {"profile_keys", "account_id"}, {"groups", "id"},
	{"sender_keys", "group_id"}, {"sender_keys", "account_id"}, {"sender_key_shared", "group_id"}, {"sender_key_shared", "account_id"},
}

// pseudonymise replaces every stored account and group id with its
// pseudonym, remembering each id (sealed) for the lists that name them.
func pseudonymise(ctx context.Context, tx *Tx) error {
	for _, c := range idColumns {
		ids, err := column[string](ctx, tx, `SELECT DISTINCT `+c.column+` FROM `+c.table)
		if err != nil {
			return err
		}
		for _, id := range ids {
			ref, err := tx.remember(ctx, id)
			if err != nil {
				return err
			}
			if _, err := tx.tx.ExecContext(ctx, `UPDATE `+c.table+` SET `+c.column+` = ? WHERE `+c.column+` = ?`, ref, id); err != nil {
				return fmt.Errorf("%s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return nil
}

// sealMetadata seals what migration 6 moved to sealed columns: recipients'
// numbers and identities, and conversation timers; the clear columns are
// emptied.
func sealMetadata(ctx context.Context, tx *Tx) error {
	rows, err := tx.tx.QueryContext(ctx, `SELECT account_id, coalesce(number, ''), identity_key, trust, key_added_ms FROM recipients`)
	if err != nil {
		return err
	}
	var rs []Recipient
	for rows.Next() {
		var r Recipient
		if err := rows.Scan(&r.Account, &r.Number, &r.IdentityKey, &r.Trust, &r.KeyAddedMS); err != nil {
			rows.Close()
			return err
		}
		rs = append(rs, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, r := range rs {
		var index, number any
		if r.Number != "" {
			index, number = tx.numberIndex(r.Number), tx.sealed([]byte(r.Number), "recipient number", r.Account)
		}
		if _, err := tx.tx.ExecContext(ctx, `UPDATE recipients SET number = NULL, identity_key = NULL, trust = 0, key_added_ms = 0,
			number_index = ?, number_sealed = ?, identity_sealed = ? WHERE account_id = ?`,
			index, number, tx.sealedIdentity(r), r.Account); err != nil {
			return err
		}
	}
	trows, err := tx.tx.QueryContext(ctx, `SELECT conversation, seconds FROM timers`)
	if err != nil {
		return err
	}
	type timer struct {
		conversation string
		seconds      int64
	}
	var ts []timer
	for trows.Next() {
		var t timer
		if err := trows.Scan(&t.conversation, &t.seconds); err != nil {
			trows.Close()
			return err
		}
		ts = append(ts, t)
	}
	if err := errors.Join(trows.Err(), trows.Close()); err != nil {
		return err
	}
	for _, t := range ts {
		if _, err := tx.tx.ExecContext(ctx, `INSERT INTO conversation_timers (conversation, sealed) VALUES (?, ?)`,
			t.conversation, tx.sealedTimer(t.conversation, t.seconds)); err != nil {
			return err
		}
	}
	_, err = tx.tx.ExecContext(ctx, `DELETE FROM timers`)
	return err
}
