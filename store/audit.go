package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/audit"
)

var _ audit.Store = (*DB)(nil)

// AppendAudit implements audit.Store.
func (db *DB) AppendAudit(ctx context.Context, e audit.Entry, seal func(*audit.Entry, []byte)) (audit.Entry, error) {
	details, err := json.Marshal(e.Details)
	if err != nil {
		return e, err
	}
	err = db.auditTx(ctx, func(tx *sql.Tx) error {
		var last int64
		var prev []byte
		err := tx.QueryRowContext(ctx, `SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		e.Seq = last + 1
		seal(&e, prev)
		_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (seq, at, kind, account_id, device_id, details, prev_mac, mac)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, e.Seq, ms(e.At), e.Kind, e.Account, e.Device, string(details), e.Prev, e.MAC)
		return err
	})
	return e, err
}

// AuditEntries implements audit.Store.
func (db *DB) AuditEntries(ctx context.Context, after int64, limit int) ([]audit.Entry, error) {
	return db.auditEntries(ctx, `SELECT seq, at, kind, account_id, device_id, details, prev_mac, mac
		FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
}

// LastAudit implements audit.Store.
func (db *DB) LastAudit(ctx context.Context) (audit.Entry, error) {
	es, err := db.auditEntries(ctx, `SELECT seq, at, kind, account_id, device_id, details, prev_mac, mac
		FROM audit_log ORDER BY seq DESC LIMIT 1`)
	if err != nil || len(es) == 0 {
		return audit.Entry{}, err
	}
	return es[0], nil
}

// AuditKeyCheck implements audit.Store.
func (db *DB) AuditKeyCheck(ctx context.Context) ([]byte, error) {
	var kc []byte
	err := db.r.QueryRowContext(ctx, `SELECT key_check FROM audit_key_check WHERE id = 1`).Scan(&kc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit key check: %w", err)
	}
	return kc, nil
}

// SetAuditKeyCheck implements audit.Store.
func (db *DB) SetAuditKeyCheck(ctx context.Context, kc []byte) ([]byte, error) {
	var stored []byte
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_key_check (id, key_check) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, kc); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT key_check FROM audit_key_check WHERE id = 1`).Scan(&stored)
	})
	if err != nil {
		return nil, fmt.Errorf("store audit key check: %w", err)
	}
	return stored, nil
}

func (db *DB) auditEntries(ctx context.Context, query string, args ...any) ([]audit.Entry, error) {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		var at int64
		var details string
		if err := rows.Scan(&e.Seq, &at, &e.Kind, &e.Account, &e.Device, &details, &e.Prev, &e.MAC); err != nil {
			return nil, err
		}
		e.At = fromMS(at)
		if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
			return nil, fmt.Errorf("audit entry %d: details: %w", e.Seq, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// PurgeAudit implements audit.Store.
func (db *DB) PurgeAudit(ctx context.Context, before time.Time) (audit.Entry, error) {
	var last audit.Entry
	err := db.auditTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT seq, mac FROM audit_log
			WHERE at < $1 AND seq < (SELECT max(seq) FROM audit_log) ORDER BY seq DESC LIMIT 1`, ms(before)).Scan(&last.Seq, &last.MAC)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM audit_log WHERE seq <= $1`, last.Seq)
		return err
	})
	return last, err
}

// auditTx runs f in a transaction that holds the audit log's append lock,
// so the chain has one order across replicas.
func (db *DB) auditTx(ctx context.Context, f func(*sql.Tx) error) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if db.d.AuditLock != "" {
			if _, err := tx.ExecContext(ctx, db.d.AuditLock); err != nil {
				return err
			}
		}
		return f(tx)
	})
}
