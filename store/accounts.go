package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/provisioning"
)

const accountColumns = `id, number_hash, identity_key, reglock_hash, reglock_failures, reglock_failure_day, last_seen_day`

func scanAccount(row *sql.Row) (accounts.Account, error) {
	var a accounts.Account
	var id string
	var number, identity []byte
	err := row.Scan(&id, &number, &identity, &a.LockHash, &a.LockFailures, &a.LockFailureDay, &a.LastSeenDay)
	if errors.Is(err, sql.ErrNoRows) {
		return a, accounts.ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("load account: %w", err)
	}
	if a.ID, err = uuid.Parse(id); err != nil {
		return a, fmt.Errorf("load account: bad id: %w", err)
	}
	copy(a.Number[:], number)
	if a.IdentityKey, err = keys.ParseECPublicKey(identity); err != nil {
		return a, fmt.Errorf("load account %s: %w", a.ID, err)
	}
	return a, nil
}

// AccountByNumber implements accounts.Store.
func (db *DB) AccountByNumber(ctx context.Context, number phone.Hash) (accounts.Account, error) {
	return scanAccount(db.r.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE number_hash = $1`, number[:]))
}

// Account implements accounts.Store.
func (db *DB) Account(ctx context.Context, id uuid.UUID) (accounts.Account, error) {
	return scanAccount(db.r.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id.String()))
}

// Register implements accounts.Store. The existing account is read with
// the dialect's row lock inside the transaction (SQLite's one writer
// serialises the whole transaction), so the lock decision and the count of
// wrong tokens it relies on are never stale.
func (db *DB) Register(ctx context.Context, r accounts.StoredRegistration, now time.Time) (uuid.UUID, error) {
	var id uuid.UUID
	var refused error // a refusal whose wrong guess is committed
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var number []byte
		err := tx.QueryRowContext(ctx, `DELETE FROM verification_sessions
			WHERE id_hash = $1 AND verified_at > 0 AND expires_at > $2 RETURNING number_hash`, r.Session[:], ms(now)).Scan(&number)
		if errors.Is(err, sql.ErrNoRows) || err == nil && string(number) != string(r.Number[:]) {
			return accounts.ErrSessionUsed
		}
		if err != nil {
			return fmt.Errorf("consume session: %w", err)
		}
		keep := false
		if r.Lock != nil {
			existing, err := scanAccount(tx.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE number_hash = $1`+db.d.LockRows, r.Number[:]))
			switch {
			case errors.Is(err, accounts.ErrNotFound):
			case err != nil:
				return err
			default:
				d := r.Lock(existing)
				if d.Err != nil && !d.Guessed {
					return d.Err // nothing changes, the session included
				}
				if d.Err != nil {
					// The session stays used up; one more wrong token today.
					if _, err := tx.ExecContext(ctx, `UPDATE accounts SET
							reglock_failures = CASE WHEN reglock_failure_day = $2 THEN reglock_failures + 1 ELSE 1 END,
							reglock_failure_day = $2
						WHERE id = $1`, existing.ID.String(), r.Day); err != nil {
						return fmt.Errorf("record lock failure: %w", err)
					}
					refused = d.Err
					return nil
				}
				keep = d.Keep
			}
		}
		var got string
		err = tx.QueryRowContext(ctx, `INSERT INTO accounts (id, number_hash, identity_key, last_seen_day)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (number_hash) DO UPDATE SET
				identity_key = excluded.identity_key,
				reglock_hash = CASE WHEN $5 = 1 THEN accounts.reglock_hash ELSE NULL END,
				reglock_failures = 0, reglock_failure_day = 0,
				last_seen_day = excluded.last_seen_day
			RETURNING id`, uuid.New().String(), r.Number[:], r.IdentityKey[:], r.Day, boolInt(keep)).Scan(&got)
		if err != nil {
			return fmt.Errorf("upsert account: %w", err)
		}
		if id, err = uuid.Parse(got); err != nil {
			return fmt.Errorf("upsert account: %w", err)
		}
		// Re-registration replaces every device; their keys and queues cascade.
		if err := db.lockAccountDevices(ctx, tx, got); err != nil {
			return fmt.Errorf("remove old devices: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE account_id = $1`, got); err != nil {
			return fmt.Errorf("remove old devices: %w", err)
		}
		d := r.Device
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (account_id, device_id, registration_id, credential, created_day, last_seen_day)
			VALUES ($1, $2, $3, $4, $5, $5)`, got, accounts.PrimaryDevice, d.RegistrationID, d.Credential, r.Day); err != nil {
			return fmt.Errorf("insert device: %w", err)
		}
		return db.storeKeys(ctx, tx, got, accounts.PrimaryDevice, keys.Upload{
			SignedPreKey: &d.SignedPreKey, LastResort: &d.LastResort, PreKeys: d.PreKeys, KEMPreKeys: d.KEMPreKeys,
		})
	})
	if err == nil && refused != nil {
		return uuid.Nil, refused
	}
	return id, err
}

// SetRegistrationLock implements accounts.Store.
func (db *DB) SetRegistrationLock(ctx context.Context, account uuid.UUID, hash []byte) error {
	return db.execOne(ctx, accounts.ErrNotFound, `UPDATE accounts SET reglock_hash = $2, reglock_failures = 0, reglock_failure_day = 0 WHERE id = $1`, account.String(), hash)
}

// SetUnidentifiedAccess implements accounts.Store.
func (db *DB) SetUnidentifiedAccess(ctx context.Context, account uuid.UUID, a accounts.UnidentifiedAccess) error {
	return db.execOne(ctx, accounts.ErrNotFound, `UPDATE accounts SET unidentified_access_key = $2, unrestricted_unidentified_access = $3 WHERE id = $1`,
		account.String(), a.Key, a.Unrestricted)
}

// accessLookupChunk bounds the ids one lookup statement names (a
// multi-recipient send names up to 1000 accounts).
const accessLookupChunk = 100

// UnidentifiedAccess implements accounts.Store.
func (db *DB) UnidentifiedAccess(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]accounts.UnidentifiedAccess, error) {
	out := make(map[uuid.UUID]accounts.UnidentifiedAccess, len(ids))
	for from := 0; from < len(ids); from += accessLookupChunk {
		chunk := ids[from:min(from+accessLookupChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id.String()
		}
		rows, err := db.r.QueryContext(ctx, `SELECT id, unidentified_access_key, unrestricted_unidentified_access FROM accounts WHERE id IN (`+
			placeholders(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("load unidentified access: %w", err)
		}
		for rows.Next() {
			var id string
			var a accounts.UnidentifiedAccess
			if err := rows.Scan(&id, &a.Key, &a.Unrestricted); err != nil {
				rows.Close()
				return nil, fmt.Errorf("load unidentified access: %w", err)
			}
			u, err := uuid.Parse(id)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("load unidentified access: %w", err)
			}
			out[u] = a
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("load unidentified access: %w", err)
		}
	}
	return out, nil
}

// DeviceCredential implements accounts.Store.
func (db *DB) DeviceCredential(ctx context.Context, account uuid.UUID, device int) ([]byte, int, error) {
	var cred []byte
	var seen int
	st, err := db.prepared(ctx, db.r, `SELECT credential, last_seen_day FROM devices WHERE account_id = $1 AND device_id = $2`)
	if err != nil {
		return nil, 0, fmt.Errorf("load credential: %w", err)
	}
	err = st.QueryRowContext(ctx, account.String(), device).Scan(&cred, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, accounts.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load credential: %w", err)
	}
	return cred, seen, nil
}

// TouchDevice implements accounts.Store.
func (db *DB) TouchDevice(ctx context.Context, account uuid.UUID, device, day int) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		// The account before its device, in the order registration and
		// deletion lock them: the other order deadlocks with them.
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET last_seen_day = $2 WHERE id = $1 AND last_seen_day < $2`, account.String(), day); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_day = $3 WHERE account_id = $1 AND device_id = $2 AND last_seen_day < $3`,
			account.String(), device, day)
		return err
	})
}

// Devices implements accounts.Store.
func (db *DB) Devices(ctx context.Context, account uuid.UUID) ([]accounts.Device, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT device_id, registration_id, created_day, last_seen_day FROM devices
		WHERE account_id = $1 ORDER BY device_id`, account.String())
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var ds []accounts.Device
	for rows.Next() {
		var d accounts.Device
		if err := rows.Scan(&d.ID, &d.RegistrationID, &d.CreatedDay, &d.LastSeenDay); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// RemoveDevice implements accounts.Store.
func (db *DB) RemoveDevice(ctx context.Context, account uuid.UUID, device int) error {
	return db.execOne(ctx, accounts.ErrNotFound, `DELETE FROM devices WHERE account_id = $1 AND device_id = $2`, account.String(), device)
}

// DeleteAccount implements accounts.Store.
func (db *DB) DeleteAccount(ctx context.Context, account uuid.UUID) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockAccountDevices(ctx, tx, account.String()); err != nil {
			return fmt.Errorf("delete account: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM accounts WHERE id = $1`, account.String())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return accounts.ErrNotFound
		}
		return nil
	})
}

// lockAccountDevices locks an account's device rows in key order, the order
// sends and acknowledgements lock them in, before a statement deletes them
// (directly or by cascade) in whatever order it scans them.
func (db *DB) lockAccountDevices(ctx context.Context, tx *sql.Tx, account string) error {
	if db.d.LockRows == "" {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id`+db.d.LockRows, account)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() { // each row is locked as it is returned
	}
	return rows.Err()
}

// execOne runs a statement that must affect at least one row, returning
// notFound otherwise.
func (db *DB) execOne(ctx context.Context, notFound error, q string, args ...any) error {
	res, err := db.w.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// AddDevice stores a new device of an account under the next free id and
// returns that id. Tests use it to add devices directly.
func (db *DB) AddDevice(ctx context.Context, account uuid.UUID, d accounts.NewDevice, day int) (int, error) {
	var id int
	err := db.tx(ctx, func(tx *sql.Tx) (err error) {
		id, err = db.addDevice(ctx, tx, account, d, day, 127)
		return err
	})
	return id, err
}

// addDevice inserts a device with the next free id, unless the account
// has maxDevices already (accounts.ErrTooManyDevices). The account row is
// locked first, so concurrent additions take turns: each sees the others'
// devices when it picks an id and counts against the limit.
func (db *DB) addDevice(ctx context.Context, tx *sql.Tx, account uuid.UUID, d accounts.NewDevice, day, maxDevices int) (int, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE id = $1`+db.d.LockRows, account.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, accounts.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("add device: %w", err)
	}
	var id, count int
	err = tx.QueryRowContext(ctx, `SELECT coalesce(max(device_id), 0) + 1, count(*) FROM devices WHERE account_id = $1`, account.String()).Scan(&id, &count)
	if err != nil {
		return 0, fmt.Errorf("add device: %w", err)
	}
	switch {
	case id == 1:
		return 0, accounts.ErrNotFound
	case count >= maxDevices || id > 127:
		return 0, accounts.ErrTooManyDevices
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (account_id, device_id, registration_id, credential, created_day, last_seen_day)
		VALUES ($1, $2, $3, $4, $5, $5)`, account.String(), id, d.RegistrationID, d.Credential, day); err != nil {
		return 0, fmt.Errorf("add device: %w", err)
	}
	return id, db.storeKeys(ctx, tx, account.String(), id, keys.Upload{
		SignedPreKey: &d.SignedPreKey, LastResort: &d.LastResort, PreKeys: d.PreKeys, KEMPreKeys: d.KEMPreKeys,
	})
}

// CreateLinkCode implements accounts.Store.
func (db *DB) CreateLinkCode(ctx context.Context, hash []byte, account uuid.UUID, expires time.Time) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO link_codes (code_hash, account_id, expires_at) VALUES ($1, $2, $3)`,
		hash, account.String(), ms(expires))
	return err
}

// LinkCodeValid implements accounts.Store.
func (db *DB) LinkCodeValid(ctx context.Context, codeHash []byte, account uuid.UUID, now time.Time) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM link_codes WHERE code_hash = $1 AND account_id = $2 AND expires_at > $3`,
		codeHash, account.String(), ms(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check link code: %w", err)
	}
	return true, nil
}

// LinkDevice implements accounts.Store: the code is consumed and the
// device added in one transaction.
func (db *DB) LinkDevice(ctx context.Context, codeHash []byte, account uuid.UUID, d accounts.NewDevice, now time.Time, maxDevices int) (int, error) {
	var id int
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var owner string
		err := tx.QueryRowContext(ctx, `DELETE FROM link_codes WHERE code_hash = $1 AND expires_at > $2 RETURNING account_id`,
			codeHash, ms(now)).Scan(&owner)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && owner != account.String()) {
			return accounts.ErrBadLinkCode
		}
		if err != nil {
			return fmt.Errorf("link device: %w", err)
		}
		id, err = db.addDevice(ctx, tx, account, d, int(now.Unix()/86400), maxDevices)
		return err
	})
	return id, err
}

// PurgeLinking deletes expired link codes and provisioning mailboxes.
func (db *DB) PurgeLinking(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for _, q := range []string{`DELETE FROM link_codes WHERE expires_at <= $1`, `DELETE FROM provisioning_mailboxes WHERE expires_at <= $1`} {
		res, err := db.w.ExecContext(ctx, q, ms(now))
		if err != nil {
			return n, err
		}
		c, _ := res.RowsAffected()
		n += int(c)
	}
	return n, nil
}

// OpenMailbox implements provisioning.Store.
func (db *DB) OpenMailbox(ctx context.Context, hash []byte, expires time.Time) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO provisioning_mailboxes (address_hash, expires_at) VALUES ($1, $2)`, hash, ms(expires))
	return err
}

// DeliverToMailbox implements provisioning.Store.
func (db *DB) DeliverToMailbox(ctx context.Context, hash, body []byte, now time.Time) error {
	return db.execOne(ctx, provisioning.ErrNoMailbox, `UPDATE provisioning_mailboxes SET body = $2
		WHERE address_hash = $1 AND body IS NULL AND expires_at > $3`, hash, body, ms(now))
}

// MailboxBody implements provisioning.Store.
func (db *DB) MailboxBody(ctx context.Context, hash []byte) ([]byte, error) {
	var body []byte
	err := db.r.QueryRowContext(ctx, `SELECT body FROM provisioning_mailboxes WHERE address_hash = $1`, hash).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, provisioning.ErrNoMailbox
	}
	return body, err
}

// CloseMailbox implements provisioning.Store.
func (db *DB) CloseMailbox(ctx context.Context, hash []byte) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM provisioning_mailboxes WHERE address_hash = $1`, hash)
	return err
}
