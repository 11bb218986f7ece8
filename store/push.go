package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/push"
)

// SetPushTarget stores a device's push target, replacing any other (when
// it was last pushed and any back-off stay: registering again does not
// earn an earlier push); a device that does not exist is
// accounts.ErrNotFound.
func (db *DB) SetPushTarget(ctx context.Context, account uuid.UUID, device int, t push.Target) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	res, err := db.w.ExecContext(ctx, `INSERT INTO push_targets (account_id, device_id, target)
		SELECT account_id, device_id, $3 FROM devices WHERE account_id = $1 AND device_id = $2
		ON CONFLICT (account_id, device_id) DO UPDATE SET target = excluded.target`,
		account.String(), device, b)
	if err != nil {
		return fmt.Errorf("set push target: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return accounts.ErrNotFound
	}
	return nil
}

// PushTarget returns a device's push target, or accounts.ErrNotFound.
func (db *DB) PushTarget(ctx context.Context, account uuid.UUID, device int) (push.Target, error) {
	var b []byte
	err := db.r.QueryRowContext(ctx, `SELECT target FROM push_targets WHERE account_id = $1 AND device_id = $2`, account.String(), device).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return push.Target{}, accounts.ErrNotFound
	}
	if err != nil {
		return push.Target{}, fmt.Errorf("load push target: %w", err)
	}
	var t push.Target
	return t, json.Unmarshal(b, &t)
}

// RemovePushTarget deletes a device's push target (none is not an error).
func (db *DB) RemovePushTarget(ctx context.Context, account uuid.UUID, device int) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM push_targets WHERE account_id = $1 AND device_id = $2`, account.String(), device)
	if err != nil {
		return fmt.Errorf("remove push target: %w", err)
	}
	return nil
}

// ClaimPush implements push.Store.
func (db *DB) ClaimPush(ctx context.Context, account uuid.UUID, device int, now time.Time, interval time.Duration) (push.Target, bool, error) {
	var b []byte
	err := db.w.QueryRowContext(ctx, `UPDATE push_targets SET last_push_ms = $3
		WHERE account_id = $1 AND device_id = $2 AND last_push_ms <= $4 AND backoff_ms <= $3
		RETURNING target`, account.String(), device, ms(now), ms(now.Add(-interval))).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return push.Target{}, false, nil
	}
	if err != nil {
		return push.Target{}, false, fmt.Errorf("claim push: %w", err)
	}
	var t push.Target
	if err := json.Unmarshal(b, &t); err != nil {
		return push.Target{}, false, fmt.Errorf("claim push: stored target: %w", err)
	}
	return t, true, nil
}

// BackOffPush implements push.Store.
func (db *DB) BackOffPush(ctx context.Context, account uuid.UUID, device int, until time.Time) error {
	_, err := db.w.ExecContext(ctx, `UPDATE push_targets SET backoff_ms = $3 WHERE account_id = $1 AND device_id = $2`,
		account.String(), device, ms(until))
	return err
}

// DeletePushTarget implements push.Store: the target goes only if it is
// still t (the device may have registered a new one meanwhile).
func (db *DB) DeletePushTarget(ctx context.Context, account uuid.UUID, device int, t push.Target) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = db.w.ExecContext(ctx, `DELETE FROM push_targets WHERE account_id = $1 AND device_id = $2 AND target = $3`, account.String(), device, b)
	return err
}

// NeedsPush implements push.Store: the device has a target and
// undelivered envelopes (devices without a target cost one read).
func (db *DB) NeedsPush(ctx context.Context, account uuid.UUID, device int, now time.Time) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM push_targets p WHERE p.account_id = $1 AND p.device_id = $2
		AND EXISTS (SELECT 1 FROM envelopes e WHERE e.account_id = $1 AND e.device_id = $2 AND e.expires_at > $3)`,
		account.String(), device, ms(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
