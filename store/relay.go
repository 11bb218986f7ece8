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

// The relay's transactional statements, prepared once (see DB.warm).
const (
	qReceipt = `SELECT request_hash, server_ts, skipped FROM send_receipts
		WHERE account_id = $1 AND device_id = $2 AND key_hash = $3 AND expires_at > $4`
	// qDestDevices reads (and, with the dialect's LockRows, locks) the
	// destination's ($1) devices with each device's queue length and bytes,
	// and the part of them from sender $2. Both come from the index
	// envelopes_queue_source: the whole queue is a prefix range, the
	// sender's share a range no longer than that share.
	qDestDevices = `SELECT d.device_id, d.registration_id,
			(SELECT count(*) FROM envelopes e WHERE e.account_id = d.account_id AND e.device_id = d.device_id),
			(SELECT coalesce(sum(e.size), 0) FROM envelopes e WHERE e.account_id = d.account_id AND e.device_id = d.device_id),
			(SELECT count(*) FROM envelopes e WHERE e.account_id = d.account_id AND e.device_id = d.device_id AND e.source_account = $2),
			(SELECT coalesce(sum(e.size), 0) FROM envelopes e WHERE e.account_id = d.account_id AND e.device_id = d.device_id AND e.source_account = $2)
		FROM devices d WHERE d.account_id = $1 ORDER BY d.device_id`
	qInsertEnvelope = `INSERT INTO envelopes (id, account_id, device_id, type, source_account,
		source_device, client_ts, server_ts, expires_at, urgent, content, size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`
)

func qDeleteEnvelopes(n int) string {
	return `DELETE FROM envelopes WHERE seq IN (` + placeholders(n) + `)`
}

// Enqueue implements relay.Store: a single-destination send is a
// multi-recipient send with one part.
func (db *DB) Enqueue(ctx context.Context, b relay.Batch, check func([]accounts.Device) error) (relay.Receipt, error) {
	return db.EnqueueMulti(ctx, relay.MultiBatch{
		Sender: b.Sender, Key: b.Key, RequestHash: b.RequestHash, KeyExpires: b.KeyExpires, Now: b.Now,
		Parts:             []relay.Part{{Destination: b.Destination, Envelopes: b.Envelopes}},
		QueueMaxEnvelopes: b.QueueMaxEnvelopes, QueueMaxBytes: b.QueueMaxBytes,
		QueueSenderMaxEnvelopes: b.QueueSenderMaxEnvelopes, QueueSenderMaxBytes: b.QueueSenderMaxBytes,
	}, func(devs map[uuid.UUID][]accounts.Device) error { return check(devs[b.Destination]) })
}

// EnqueueMulti implements relay.Store.
func (db *DB) EnqueueMulti(ctx context.Context, b relay.MultiBatch, check func(map[uuid.UUID][]accounts.Device) error) (relay.Receipt, error) {
	for attempt := 0; ; attempt++ {
		rc, err := db.enqueue(ctx, b, check)
		if errors.Is(err, errKeyRace) && attempt == 0 {
			continue
		}
		return rc, err
	}
}

func (db *DB) enqueue(ctx context.Context, b relay.MultiBatch, check func(map[uuid.UUID][]accounts.Device) error) (relay.Receipt, error) {
	var rc relay.Receipt
	sender := b.Sender.Account.String()
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if b.Key != nil {
			var reqHash []byte
			var ts int64
			var skipped string
			st, err := db.txStmt(ctx, tx, qReceipt)
			if err != nil {
				return fmt.Errorf("look up idempotency key: %w", err)
			}
			err = st.QueryRowContext(ctx, sender, b.Sender.Device, b.Key, ms(b.Now)).Scan(&reqHash, &ts, &skipped)
			switch {
			case err == nil && !bytes.Equal(reqHash, b.RequestHash):
				return relay.ErrIdempotencyKeyUsed
			case err == nil:
				rc = relay.Receipt{ServerTimestamp: fromMS(ts), Replayed: true}
				rc.Skipped, err = decodeSkipped(skipped)
				return err
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up idempotency key: %w", err)
			}
		}
		// Locking each destination's device rows (in the parts' order)
		// serialises senders to one account, so each device's seq order is
		// its commit order and a reader's cursor never skips a late commit.
		// The same round trip measures each device's queue for the caps.
		devices := make(map[uuid.UUID][]accounts.Device, len(b.Parts))
		queued := make(map[uuid.UUID]map[int]queueUsage, len(b.Parts))
		for _, p := range b.Parts {
			devs, q, err := db.lockDevices(ctx, tx, p.Destination, b.Sender.Account)
			if err != nil {
				return err
			}
			devices[p.Destination], queued[p.Destination] = devs, q
		}
		if err := check(devices); err != nil {
			return err
		}
		var skipped []relay.Skipped
		stored := 0
		for _, p := range b.Parts {
			skipped = appendSkipped(skipped, b, p, queued[p.Destination])
			stored += len(p.Envelopes)
		}
		if stored == len(skipped) {
			full := &relay.QueueFullError{Account: skipped[0].Account}
			for _, sk := range skipped {
				if sk.Account == full.Account {
					full.Devices = append(full.Devices, sk.Device)
				}
			}
			return full
		}
		skip := make(map[uuid.UUID]map[int]bool, len(skipped))
		for _, sk := range skipped {
			if skip[sk.Account] == nil {
				skip[sk.Account] = map[int]bool{}
			}
			skip[sk.Account][sk.Device] = true
		}
		ins, err := db.txStmt(ctx, tx, qInsertEnvelope)
		if err != nil {
			return fmt.Errorf("store envelope: %w", err)
		}
		for _, p := range b.Parts {
			dest := p.Destination.String()
			for _, e := range p.Envelopes {
				if skip[p.Destination][e.DestDevice] {
					continue
				}
				if _, err := ins.ExecContext(ctx, e.ID.String(), dest, e.DestDevice, e.Type, e.SourceAccount.String(),
					e.SourceDevice, e.ClientTimestamp, ms(e.ServerTimestamp), ms(e.ExpiresAt), e.Urgent, e.Content, len(e.Content)); err != nil {
					return fmt.Errorf("store envelope: %w", err)
				}
			}
		}
		if b.Key != nil {
			// Replaces only an expired receipt; a live one means a
			// concurrent request with this key committed first.
			res, err := tx.ExecContext(ctx, `INSERT INTO send_receipts (account_id, device_id, key_hash, request_hash, server_ts, expires_at, skipped)
				VALUES ($1, $2, $3, $4, $5, $6, $8)
				ON CONFLICT (account_id, device_id, key_hash) DO UPDATE SET
					request_hash = excluded.request_hash, server_ts = excluded.server_ts, expires_at = excluded.expires_at,
					skipped = excluded.skipped
				WHERE send_receipts.expires_at <= $7`,
				sender, b.Sender.Device, b.Key, b.RequestHash, ms(b.Now), ms(b.KeyExpires), ms(b.Now), encodeSkipped(skipped))
			if err != nil {
				return fmt.Errorf("store idempotency key: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return errKeyRace
			}
		}
		rc = relay.Receipt{ServerTimestamp: b.Now, Skipped: skipped}
		return nil
	})
	return rc, err
}

// lockDevices reads and locks an account's devices with their queue sizes
// and sender's part of them.
func (db *DB) lockDevices(ctx context.Context, tx *sql.Tx, account, sender uuid.UUID) ([]accounts.Device, map[int]queueUsage, error) {
	st, err := db.txStmt(ctx, tx, qDestDevices+db.d.LockRows)
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	rows, err := st.QueryContext(ctx, account.String(), sender.String())
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	defer rows.Close()
	var devs []accounts.Device
	queued := map[int]queueUsage{}
	for rows.Next() {
		var d accounts.Device
		var u queueUsage
		if err := rows.Scan(&d.ID, &d.RegistrationID, &u.n, &u.bytes, &u.senderN, &u.senderBytes); err != nil {
			return nil, nil, fmt.Errorf("read devices: %w", err)
		}
		devs = append(devs, d)
		queued[d.ID] = u
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	return devs, queued, nil
}

// queueUsage is a device's queue: all of it, and the sender's part.
type queueUsage struct{ n, bytes, senderN, senderBytes int64 }

// appendSkipped appends the devices of p whose queue has no room for their
// envelope: SkipQueueFull when the whole queue would pass a cap,
// SkipSenderShare when the sender's part would (other accounts only).
func appendSkipped(skipped []relay.Skipped, b relay.MultiBatch, p relay.Part, queued map[int]queueUsage) []relay.Skipped {
	over := func(n, bytes int64, maxN int, maxBytes int64, size int) bool {
		return (maxN > 0 && n+1 > int64(maxN)) || (maxBytes > 0 && bytes+int64(size) > maxBytes)
	}
	for _, e := range p.Envelopes {
		u := queued[e.DestDevice]
		switch {
		case over(u.n, u.bytes, b.QueueMaxEnvelopes, b.QueueMaxBytes, len(e.Content)):
			skipped = append(skipped, relay.Skipped{Account: p.Destination, Device: e.DestDevice, Reason: relay.SkipQueueFull})
		case p.Destination != b.Sender.Account &&
			over(u.senderN, u.senderBytes, b.QueueSenderMaxEnvelopes, b.QueueSenderMaxBytes, len(e.Content)):
			skipped = append(skipped, relay.Skipped{Account: p.Destination, Device: e.DestDevice, Reason: relay.SkipSenderShare})
		}
	}
	return skipped
}

// encodeSkipped is the send_receipts.skipped column: "account:device:reason"
// items joined by ",".
func encodeSkipped(skipped []relay.Skipped) string {
	var b strings.Builder
	for i, sk := range skipped {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d:%s", sk.Account, sk.Device, sk.Reason)
	}
	return b.String()
}

// decodeSkipped parses what encodeSkipped wrote.
func decodeSkipped(s string) ([]relay.Skipped, error) {
	if s == "" {
		return nil, nil
	}
	var out []relay.Skipped
	for item := range strings.SplitSeq(s, ",") {
		parts := strings.Split(item, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("read idempotency key: bad skipped device %q", item)
		}
		account, err := uuid.Parse(parts[0])
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: skipped device %q: %w", item, err)
		}
		device, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: skipped device %q: %w", item, err)
		}
		out = append(out, relay.Skipped{Account: account, Device: device, Reason: relay.SkipReason(parts[2])})
	}
	return out, nil
}

// Pending implements relay.Store.
func (db *DB) Pending(ctx context.Context, account uuid.UUID, device int, after int64, now time.Time, limit int) ([]relay.Envelope, error) {
	st, err := db.prepared(ctx, db.r, `SELECT seq, id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content
		FROM envelopes WHERE account_id = $1 AND device_id = $2 AND seq > $3 AND expires_at > $4 ORDER BY seq LIMIT $5`)
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	rows, err := st.QueryContext(ctx, account.String(), device, after, ms(now), limit)
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
			st, err := db.txStmt(ctx, tx, qDeleteEnvelopes(n))
			if err != nil {
				return fmt.Errorf("delete acknowledged envelopes: %w", err)
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
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
