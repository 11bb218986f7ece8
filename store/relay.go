package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
)

var _ relay.Store = (*DB)(nil)

// errKeyRace reports that a concurrent request with the same idempotency key
// committed first; the caller retries and finds its receipt.
var errKeyRace = errors.New("concurrent send with the same idempotency key")

// Enqueue implements relay.Store.
func (db *DB) Enqueue(ctx context.Context, b relay.Batch, check func([]accounts.Device) error) (relay.Receipt, error) {
	for attempt := 0; ; attempt++ {
		rc, err := db.enqueue(ctx, b, check)
		if errors.Is(err, errKeyRace) && attempt == 0 {
			continue
		}
		return rc, err
	}
}

func (db *DB) enqueue(ctx context.Context, b relay.Batch, check func([]accounts.Device) error) (relay.Receipt, error) {
	var rc relay.Receipt
	sender, dest := b.Sender.Account.String(), b.Destination.String()
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if b.Key != nil {
			var reqHash []byte
			var ts int64
			err := tx.QueryRowContext(ctx, `SELECT request_hash, server_ts FROM send_receipts
				WHERE account_id = $1 AND device_id = $2 AND key_hash = $3 AND expires_at > $4`,
				sender, b.Sender.Device, b.Key, ms(b.Now)).Scan(&reqHash, &ts)
			switch {
			case err == nil && !bytes.Equal(reqHash, b.RequestHash):
				return relay.ErrIdempotencyKeyUsed
			case err == nil:
				rc = relay.Receipt{ServerTimestamp: fromMS(ts), Replayed: true}
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up idempotency key: %w", err)
			}
		}
		// Locking the destination's device rows serialises senders to one
		// account, so each device's seq order is its commit order and a
		// reader's cursor never skips a late commit.
		devs, err := db.devices(ctx, tx, dest, db.d.LockRows)
		if err != nil {
			return err
		}
		if err := check(devs); err != nil {
			return err
		}
		if err := db.checkQueues(ctx, tx, b); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO envelopes (id, account_id, device_id, type, source_account,
			source_device, client_ts, server_ts, expires_at, urgent, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`)
		if err != nil {
			return fmt.Errorf("store envelopes: %w", err)
		}
		defer stmt.Close()
		for _, e := range b.Envelopes {
			if _, err := stmt.ExecContext(ctx, e.ID.String(), dest, e.DestDevice, e.Type, e.SourceAccount.String(),
				e.SourceDevice, e.ClientTimestamp, ms(e.ServerTimestamp), ms(e.ExpiresAt), e.Urgent, e.Content); err != nil {
				return fmt.Errorf("store envelope: %w", err)
			}
		}
		if b.Key != nil {
			// Replaces only an expired receipt; a live one means a
			// concurrent request with this key committed first.
			res, err := tx.ExecContext(ctx, `INSERT INTO send_receipts (account_id, device_id, key_hash, request_hash, server_ts, expires_at)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (account_id, device_id, key_hash) DO UPDATE SET
					request_hash = excluded.request_hash, server_ts = excluded.server_ts, expires_at = excluded.expires_at
				WHERE send_receipts.expires_at <= $7`,
				sender, b.Sender.Device, b.Key, b.RequestHash, ms(b.Now), ms(b.KeyExpires), ms(b.Now))
			if err != nil {
				return fmt.Errorf("store idempotency key: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return errKeyRace
			}
		}
		rc = relay.Receipt{ServerTimestamp: b.Now}
		return nil
	})
	if err != nil && db.d.IsUniqueViolation(err) {
		err = errKeyRace
	}
	return rc, err
}

// checkQueues refuses a batch that would push a device's queue over its caps.
func (db *DB) checkQueues(ctx context.Context, tx *sql.Tx, b relay.Batch) error {
	if b.QueueMaxEnvelopes <= 0 && b.QueueMaxBytes <= 0 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT device_id, count(*), coalesce(sum(length(content)), 0) FROM envelopes
		WHERE account_id = $1 GROUP BY device_id`, b.Destination.String())
	if err != nil {
		return fmt.Errorf("measure queues: %w", err)
	}
	defer rows.Close()
	type usage struct{ n, bytes int64 }
	queued := map[int]usage{}
	for rows.Next() {
		var dev int
		var u usage
		if err := rows.Scan(&dev, &u.n, &u.bytes); err != nil {
			return fmt.Errorf("measure queues: %w", err)
		}
		queued[dev] = u
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("measure queues: %w", err)
	}
	var full []int
	for _, e := range b.Envelopes {
		u := queued[e.DestDevice]
		if (b.QueueMaxEnvelopes > 0 && u.n+1 > int64(b.QueueMaxEnvelopes)) ||
			(b.QueueMaxBytes > 0 && u.bytes+int64(len(e.Content)) > b.QueueMaxBytes) {
			full = append(full, e.DestDevice)
		}
	}
	if len(full) > 0 {
		return &relay.QueueFullError{Devices: full}
	}
	return nil
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func (db *DB) devices(ctx context.Context, q querier, account, lock string) ([]accounts.Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT device_id, registration_id FROM devices WHERE account_id = $1 ORDER BY device_id`+lock, account)
	if err != nil {
		return nil, fmt.Errorf("read devices: %w", err)
	}
	defer rows.Close()
	var ds []accounts.Device
	for rows.Next() {
		var d accounts.Device
		if err := rows.Scan(&d.ID, &d.RegistrationID); err != nil {
			return nil, fmt.Errorf("read devices: %w", err)
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// Pending implements relay.Store.
func (db *DB) Pending(ctx context.Context, account uuid.UUID, device int, after int64, now time.Time, limit int) ([]relay.Envelope, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT seq, id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content
		FROM envelopes WHERE account_id = $1 AND device_id = $2 AND seq > $3 AND expires_at > $4 ORDER BY seq LIMIT $5`,
		account.String(), device, after, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	defer rows.Close()
	var out []relay.Envelope
	for rows.Next() {
		e := relay.Envelope{DestDevice: device}
		var id, src string
		var server, expires int64
		if err := rows.Scan(&e.Seq, &id, &e.Type, &src, &e.SourceDevice, &e.ClientTimestamp, &server, &expires, &e.Urgent, &e.Content); err != nil {
			return nil, fmt.Errorf("read queue: %w", err)
		}
		if e.ID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("read queue: envelope id: %w", err)
		}
		if e.SourceAccount, err = uuid.Parse(src); err != nil {
			return nil, fmt.Errorf("read queue: source: %w", err)
		}
		e.ServerTimestamp, e.ExpiresAt = fromMS(server), fromMS(expires)
		out = append(out, e)
	}
	return out, rows.Err()
}

// deleteSizes are the statement sizes Delete pads to, so PostgreSQL sees a
// handful of distinct prepared statements rather than one per batch size.
var deleteSizes = [...]int{1, 4, 16, 64, 256, 1000}

// Delete implements relay.Store.
func (db *DB) Delete(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		for len(seqs) > 0 {
			n := deleteSizes[len(deleteSizes)-1]
			for _, size := range deleteSizes {
				if size >= len(seqs) {
					n = size
					break
				}
			}
			chunk := seqs[:min(n, len(seqs))]
			seqs = seqs[len(chunk):]
			args := make([]any, n)
			for i := range args {
				args[i] = chunk[min(i, len(chunk)-1)] // pad with a repeat
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM envelopes WHERE seq IN (`+placeholders(n)+`)`, args...); err != nil {
				return fmt.Errorf("delete acknowledged envelopes: %w", err)
			}
		}
		return nil
	})
}

func placeholders(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

// PurgeExpired implements relay.Store.
func (db *DB) PurgeExpired(ctx context.Context, now time.Time, limit int) (int, error) {
	res, err := db.w.ExecContext(ctx, `DELETE FROM envelopes WHERE seq IN
		(SELECT seq FROM envelopes WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)`, ms(now), limit)
	if err != nil {
		return 0, fmt.Errorf("purge expired envelopes: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if _, err := db.w.ExecContext(ctx, `DELETE FROM send_receipts WHERE expires_at <= $1`, ms(now)); err != nil {
		return int(n), fmt.Errorf("purge idempotency keys: %w", err)
	}
	return int(n), nil
}
