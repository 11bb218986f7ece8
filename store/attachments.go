package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parleyhq/parley/attachments"
)

var _ attachments.Store = (*DB)(nil)

// CreateBucket implements attachments.Store.
func (db *DB) CreateBucket(ctx context.Context, b attachments.Bucket) error {
	_, err := db.w.ExecContext(ctx, `INSERT INTO attachment_buckets (id, member_hash, admin_hash, generation, retention_ms)
		VALUES ($1, $2, $3, 0, $4)`, b.ID, b.MemberHash, b.AdminHash, b.Retention.Milliseconds())
	return err
}

// Bucket implements attachments.Store.
func (db *DB) Bucket(ctx context.Context, id string) (attachments.Bucket, error) {
	b := attachments.Bucket{ID: id}
	var ret int64
	err := db.r.QueryRowContext(ctx, `SELECT member_hash, admin_hash, generation, retention_ms FROM attachment_buckets
		WHERE id = $1 AND deleted_at = 0`, id).Scan(&b.MemberHash, &b.AdminHash, &b.Generation, &ret)
	if errors.Is(err, sql.ErrNoRows) {
		return b, attachments.ErrNotFound
	}
	b.Retention = time.Duration(ret) * time.Millisecond
	return b, err
}

// ReserveObject implements attachments.Store. Locking the bucket row
// serialises reservations in one bucket, so concurrent uploads cannot
// together overrun the quota.
func (db *DB) ReserveObject(ctx context.Context, o attachments.Object, gen int, quota int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var cur int
		err := tx.QueryRowContext(ctx, `SELECT generation FROM attachment_buckets WHERE id = $1 AND deleted_at = 0`+db.d.LockRows, o.Bucket).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return attachments.ErrNotFound
		case err != nil:
			return fmt.Errorf("reserve object: %w", err)
		case cur != gen:
			return attachments.ErrConflict
		}
		var used int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(size), 0) FROM attachment_objects WHERE bucket_id = $1 AND expires_at > $2`,
			o.Bucket, ms(o.Created)).Scan(&used); err != nil {
			return fmt.Errorf("reserve object: %w", err)
		}
		if used+o.Size > quota {
			return fmt.Errorf("%w (%d of %d bytes used)", attachments.ErrQuota, used, quota)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO attachment_objects (bucket_id, object_key, size, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, o.Bucket, o.Key, o.Size, ms(o.Created), ms(o.Expires))
		return err
	})
}

// Object implements attachments.Store.
func (db *DB) Object(ctx context.Context, bucket, key string, now time.Time) (attachments.Object, error) {
	o := attachments.Object{Bucket: bucket, Key: key}
	var created, expires int64
	err := db.r.QueryRowContext(ctx, `SELECT o.size, o.created_at, o.expires_at FROM attachment_objects o
		JOIN attachment_buckets b ON b.id = o.bucket_id
		WHERE o.bucket_id = $1 AND o.object_key = $2 AND o.expires_at > $3 AND b.deleted_at = 0`,
		bucket, key, ms(now)).Scan(&o.Size, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return o, attachments.ErrNotFound
	}
	o.Created, o.Expires = fromMS(created), fromMS(expires)
	return o, err
}

// RotateMemberSecret implements attachments.Store.
func (db *DB) RotateMemberSecret(ctx context.Context, bucket string, gen int, hash []byte) (int, error) {
	err := db.execOne(ctx, attachments.ErrConflict, `UPDATE attachment_buckets SET member_hash = $3, generation = generation + 1
		WHERE id = $1 AND generation = $2 AND deleted_at = 0`, bucket, gen, hash)
	return gen + 1, err
}

// SetRetention implements attachments.Store.
func (db *DB) SetRetention(ctx context.Context, bucket string, retention time.Duration) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE attachment_buckets SET retention_ms = $2 WHERE id = $1 AND deleted_at = 0`,
			bucket, retention.Milliseconds())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, attachments.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `UPDATE attachment_objects SET expires_at = created_at + $2 WHERE bucket_id = $1`,
			bucket, retention.Milliseconds())
		return err
	})
}

// DeleteBucket implements attachments.Store.
func (db *DB) DeleteBucket(ctx context.Context, bucket string, now time.Time) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE attachment_buckets SET deleted_at = $2 WHERE id = $1 AND deleted_at = 0`, bucket, ms(now))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, attachments.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM attachment_objects WHERE bucket_id = $1`, bucket)
		return err
	})
}

// ExpiredObjects implements attachments.Store.
func (db *DB) ExpiredObjects(ctx context.Context, now time.Time, limit int) ([]attachments.Object, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT bucket_id, object_key, size, created_at, expires_at FROM attachment_objects
		WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2`, ms(now), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []attachments.Object
	for rows.Next() {
		var o attachments.Object
		var created, expires int64
		if err := rows.Scan(&o.Bucket, &o.Key, &o.Size, &created, &expires); err != nil {
			return nil, err
		}
		o.Created, o.Expires = fromMS(created), fromMS(expires)
		out = append(out, o)
	}
	return out, rows.Err()
}

// DeleteObjects implements attachments.Store.
func (db *DB) DeleteObjects(ctx context.Context, objs []attachments.Object) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		for len(objs) > 0 {
			n := min(len(objs), 200)
			var q strings.Builder
			args := make([]any, 0, 2*n)
			q.WriteString(`DELETE FROM attachment_objects WHERE `)
			for i, o := range objs[:n] {
				if i > 0 {
					q.WriteString(" OR ")
				}
				fmt.Fprintf(&q, "(bucket_id = $%d AND object_key = $%d)", 2*i+1, 2*i+2)
				args = append(args, o.Bucket, o.Key)
			}
			if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
			objs = objs[n:]
		}
		return nil
	})
}

// ObjectKeys implements attachments.Store.
func (db *DB) ObjectKeys(ctx context.Context, bucket string) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT object_key FROM attachment_objects WHERE bucket_id = $1`, bucket)
	if err != nil {
		return nil, fmt.Errorf("list object keys: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("list object keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// DeletedBuckets implements attachments.Store.
func (db *DB) DeletedBuckets(ctx context.Context, limit int) ([]attachments.Bucket, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, deleted_at FROM attachment_buckets WHERE deleted_at > 0 ORDER BY deleted_at LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []attachments.Bucket
	for rows.Next() {
		var b attachments.Bucket
		var deleted int64
		if err := rows.Scan(&b.ID, &deleted); err != nil {
			return nil, err
		}
		b.Deleted = fromMS(deleted)
		out = append(out, b)
	}
	return out, rows.Err()
}

// ForgetBucket implements attachments.Store.
func (db *DB) ForgetBucket(ctx context.Context, id string) error {
	_, err := db.w.ExecContext(ctx, `DELETE FROM attachment_buckets WHERE id = $1 AND deleted_at > 0`, id)
	return err
}
