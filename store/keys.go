package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/prekeys"
)

// StoreKeys implements keys.Store. The device row is locked first, so
// concurrent uploads for one device run one after another and the pool cap
// counted in insertPool holds (on PostgreSQL, under READ COMMITTED, two
// uploads would otherwise each count the pool without the other's keys).
func (db *DB) StoreKeys(ctx context.Context, account uuid.UUID, device int, u keys.Upload) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2`+db.d.LockRows, account.String(), device).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return keys.ErrNoDevice
		}
		if err != nil {
			return fmt.Errorf("store keys: %w", err)
		}
		return db.storeKeys(ctx, tx, account.String(), device, u)
	})
}

// storeKeys writes u for an existing device inside tx, which holds the
// device's row locked (or created it).
func (db *DB) storeKeys(ctx context.Context, tx *sql.Tx, account string, device int, u keys.Upload) error {
	if k := u.SignedPreKey; k != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO signed_prekeys (account_id, device_id, key_id, public_key, signature)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, device_id) DO UPDATE SET
			key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature`,
			account, device, k.ID, k.PublicKey[:], k.Signature[:]); err != nil {
			return fmt.Errorf("store signed prekey: %w", err)
		}
	}
	if k := u.LastResort; k != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO kem_last_resort_prekeys (account_id, device_id, key_id, public_key, signature)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, device_id) DO UPDATE SET
			key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature`,
			account, device, k.ID, []byte(k.PublicKey), k.Signature[:]); err != nil {
			return fmt.Errorf("store last-resort prekey: %w", err)
		}
	}
	if len(u.PreKeys) > 0 {
		rows := make([][]any, len(u.PreKeys))
		for i, k := range u.PreKeys {
			rows[i] = []any{account, device, k.ID, k.PublicKey[:]}
		}
		if err := db.insertPool(ctx, tx, "ec_prekeys", "account_id, device_id, key_id, public_key", rows); err != nil {
			return err
		}
	}
	if u.ReplaceKEMPreKeys {
		if _, err := tx.ExecContext(ctx, `DELETE FROM kem_prekeys WHERE account_id = $1 AND device_id = $2`, account, device); err != nil {
			return fmt.Errorf("replace kem prekeys: %w", err)
		}
	}
	if len(u.KEMPreKeys) > 0 {
		rows := make([][]any, len(u.KEMPreKeys))
		for i, k := range u.KEMPreKeys {
			rows[i] = []any{account, device, k.ID, []byte(k.PublicKey), k.Signature[:]}
		}
		if err := db.insertPool(ctx, tx, "kem_prekeys", "account_id, device_id, key_id, public_key, signature", rows); err != nil {
			return err
		}
	}
	return nil
}

// insertPool adds one-time prekeys (rows of account, device, ...) to a pool
// table in one statement and enforces keys.MaxPoolSize.
func (db *DB) insertPool(ctx context.Context, tx *sql.Tx, table, columns string, rows [][]any) error {
	var q strings.Builder
	fmt.Fprintf(&q, "INSERT INTO %s (%s) VALUES ", table, columns)
	args := make([]any, 0, len(rows)*len(rows[0]))
	for i, r := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteByte('(')
		for j, v := range r {
			if j > 0 {
				q.WriteString(", ")
			}
			args = append(args, v)
			fmt.Fprintf(&q, "$%d", len(args))
		}
		q.WriteByte(')')
	}
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		if db.d.IsUniqueViolation(err) {
			return fmt.Errorf("%w: an id is already in the pool", keys.ErrDuplicateID)
		}
		return fmt.Errorf("store one-time prekeys: %w", err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+table+" WHERE account_id = $1 AND device_id = $2", rows[0][0], rows[0][1]).Scan(&n); err != nil {
		return fmt.Errorf("count one-time prekeys: %w", err)
	}
	if n > keys.MaxPoolSize {
		return fmt.Errorf("%w: pool would hold %d keys, the limit is %d", keys.ErrTooMany, n, keys.MaxPoolSize)
	}
	return nil
}

// CountPreKeys implements prekeys.Store.
func (db *DB) CountPreKeys(ctx context.Context, account uuid.UUID, device int) (prekeys.Counts, error) {
	var c prekeys.Counts
	err := db.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM ec_prekeys WHERE account_id = $1 AND device_id = $2),
		(SELECT count(*) FROM kem_prekeys WHERE account_id = $1 AND device_id = $2)`, account.String(), device).Scan(&c.EC, &c.KEM)
	if err != nil {
		return c, fmt.Errorf("count prekeys: %w", err)
	}
	return c, nil
}

// ClaimBundle implements prekeys.Store.
func (db *DB) ClaimBundle(ctx context.Context, account uuid.UUID, device int) (prekeys.Bundle, error) {
	return db.bundle(ctx, account, device, true)
}

// LastResortBundle implements prekeys.Store.
func (db *DB) LastResortBundle(ctx context.Context, account uuid.UUID, device int) (prekeys.Bundle, error) {
	return db.bundle(ctx, account, device, false)
}

// bundle assembles a bundle, claiming one-time prekeys if claim is set.
func (db *DB) bundle(ctx context.Context, account uuid.UUID, device int, claim bool) (prekeys.Bundle, error) {
	var b prekeys.Bundle
	err := db.tx(ctx, func(tx *sql.Tx) error {
		b = prekeys.Bundle{}
		var identity []byte
		err := tx.QueryRowContext(ctx, `SELECT identity_key FROM accounts WHERE id = $1`, account.String()).Scan(&identity)
		if errors.Is(err, sql.ErrNoRows) {
			return prekeys.ErrNotFound
		}
		if err != nil {
			return err
		}
		if b.IdentityKey, err = keys.ParseECPublicKey(identity); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT d.device_id, d.registration_id,
				s.key_id, s.public_key, s.signature, l.key_id, l.public_key, l.signature
			FROM devices d
			JOIN signed_prekeys s ON s.account_id = d.account_id AND s.device_id = d.device_id
			JOIN kem_last_resort_prekeys l ON l.account_id = d.account_id AND l.device_id = d.device_id
			WHERE d.account_id = $1 AND ($2 = 0 OR d.device_id = $2)
			ORDER BY d.device_id`, account.String(), device)
		if err != nil {
			return err
		}
		for rows.Next() {
			var d prekeys.DeviceBundle
			var spk, sig, lpk, lsig []byte
			if err := rows.Scan(&d.DeviceID, &d.RegistrationID, &d.SignedPreKey.ID, &spk, &sig, &d.KEMPreKey.ID, &lpk, &lsig); err != nil {
				rows.Close()
				return err
			}
			copy(d.SignedPreKey.PublicKey[:], spk)
			copy(d.SignedPreKey.Signature[:], sig)
			d.KEMPreKey.PublicKey = lpk
			copy(d.KEMPreKey.Signature[:], lsig)
			d.LastResort = true
			b.Devices = append(b.Devices, d)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if len(b.Devices) == 0 {
			return prekeys.ErrNotFound
		}
		if !claim {
			return nil
		}
		for i := range b.Devices {
			d := &b.Devices[i]
			var pk keys.PreKey
			var pub []byte
			err := tx.QueryRowContext(ctx, db.d.ClaimEC, account.String(), d.DeviceID).Scan(&pk.ID, &pub)
			switch {
			case err == nil:
				copy(pk.PublicKey[:], pub)
				d.PreKey = &pk
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("claim EC prekey: %w", err)
			}
			var kem keys.KEMPreKey
			var ksig []byte
			err = tx.QueryRowContext(ctx, db.d.ClaimKEM, account.String(), d.DeviceID).Scan(&kem.ID, &kem.PublicKey, &ksig)
			switch {
			case err == nil:
				copy(kem.Signature[:], ksig)
				d.KEMPreKey, d.LastResort = kem, false
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("claim KEM prekey: %w", err)
			}
		}
		return nil
	})
	return b, err
}
