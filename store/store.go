// Package store persists the relay's state in SQL. One implementation serves
// both SQLite (store/sqlite, the embedded default) and PostgreSQL
// (store/postgres); a Dialect carries the few statements that differ. All SQL
// of the project lives under this directory.
//
// DB implements the storage interfaces that the domain packages declare
// (accounts.Store, keys.Store, prekeys.Store, verify.Store, relay.Store); store/storetest
// checks that both dialects behave the same.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/verify"
)

// Dialect is what differs between database engines.
type Dialect struct {
	Name string
	// Migrations holds the numbered schema files.
	Migrations fs.FS
	// MigrationLock (a query answering true once it took the lock, false
	// when another session holds it; Migrate polls it) and MigrationUnlock
	// serialise concurrent migrators (empty when the engine serialises
	// writers itself).
	MigrationLock, MigrationUnlock string
	// ClaimEC and ClaimKEM remove and return (key_id, public_key[, signature])
	// of the lowest-id one-time prekey of device ($1 account, $2 device),
	// safely under concurrent claimers.
	ClaimEC, ClaimKEM string
	// LockRows is appended to a SELECT to lock the rows it reads until
	// the transaction ends (empty when the engine has a single writer).
	LockRows string
	// ListTables lists the schema's tables (name in the first column).
	ListTables string
	// AuditLock serialises audit-log appends across replicas until the
	// transaction ends (empty when the engine has a single writer).
	AuditLock string
	// IsUniqueViolation reports whether err is a unique-constraint failure.
	IsUniqueViolation func(error) bool
	// QueueTx, if set, runs f in a transaction of the engine's native
	// driver on a connection of db, whose Run sends its statements in one
	// round trip; nil runs queue transactions through database/sql.
	QueueTx func(ctx context.Context, db *sql.DB, f func(QueueTx) error) error
}

// DB is the relay's database. Writes go through w; reads through r (the same
// pool for PostgreSQL, a separate read-only pool for SQLite, whose single
// writer connection would otherwise serialise reads behind writes).
type DB struct {
	w, r *sql.DB
	d    *Dialect

	// stmts caches prepared hot-path statements per pool: SQLite spent a
	// third of the relay's CPU re-parsing SQL before it.
	stmtMu sync.Mutex
	stmts  map[stmtKey]*sql.Stmt

	// lockTexts are the queue's lock statements by size, in d's dialect.
	lockTexts map[int]string
}

type stmtKey struct {
	pool  *sql.DB
	query string
}

// prepared returns pool's cached prepared statement for query.
func (db *DB) prepared(ctx context.Context, pool *sql.DB, query string) (*sql.Stmt, error) {
	db.stmtMu.Lock()
	defer db.stmtMu.Unlock()
	k := stmtKey{pool, query}
	if st, ok := db.stmts[k]; ok {
		return st, nil
	}
	st, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if db.stmts == nil {
		db.stmts = map[stmtKey]*sql.Stmt{}
	}
	db.stmts[k] = st
	return st, nil
}

// txStmt is query prepared for tx: from the writer's cache when Migrate
// prepared it there, else prepared on tx itself. (Preparing on the pool
// here could wait forever for SQLite's one writer connection, which tx
// holds.)
func (db *DB) txStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	db.stmtMu.Lock()
	st, ok := db.stmts[stmtKey{db.w, query}]
	db.stmtMu.Unlock()
	if !ok {
		return tx.PrepareContext(ctx, query)
	}
	return tx.StmtContext(ctx, st), nil
}

// warm prepares the writer's hot transactional statements.
func (db *DB) warm(ctx context.Context) error {
	qs := []string{qReceipt, qStoreReceipt, qSealedReceipt, qStoreSealedReceipt}
	for _, n := range inSizes {
		qs = append(qs, qDeleteEnvelopes(n), db.qLockDevices(n))
	}
	for _, n := range pairSizes {
		qs = append(qs, qShares(n), qCountQueues(n))
	}
	for _, n := range insertSizes {
		qs = append(qs, qInsertEnvelopes(n), qCountShares(n))
	}
	for _, q := range qs {
		if _, err := db.prepared(ctx, db.w, q); err != nil {
			return fmt.Errorf("prepare statements: %w", err)
		}
	}
	return nil
}

var (
	_ accounts.Store = (*DB)(nil)
	_ keys.Store     = (*DB)(nil)
	_ prekeys.Store  = (*DB)(nil)
	_ verify.Store   = (*DB)(nil)
)

// New wraps open pools; it does not migrate.
func New(w, r *sql.DB, d *Dialect) *DB {
	return &DB{w: w, r: r, d: d, lockTexts: buildEach(inSizes[:], func(n int) string { return buildLockDevices(n, d.LockRows) })}
}

// Dialect returns the database engine's name ("sqlite" or "postgres").
func (db *DB) Dialect() string { return db.d.Name }

// Migrate brings the schema up to date and prepares the hot statements.
func (db *DB) Migrate(ctx context.Context) (int, error) {
	n, err := Migrate(ctx, db.w, db.d)
	if err != nil {
		return n, err
	}
	return n, db.warm(ctx)
}

// Ping checks that the database answers (for readiness probes).
func (db *DB) Ping(ctx context.Context) error {
	if err := db.w.PingContext(ctx); err != nil {
		return err
	}
	return db.r.PingContext(ctx)
}

// Close closes both pools.
func (db *DB) Close() error {
	db.stmtMu.Lock()
	for _, st := range db.stmts {
		st.Close()
	}
	db.stmts = nil
	db.stmtMu.Unlock()
	err := db.w.Close()
	if db.r != db.w {
		err = errors.Join(err, db.r.Close())
	}
	return err
}

// Tables lists the application's tables, for tests that inspect what the
// relay stores.
func (db *DB) Tables() []string {
	return []string{"accounts", "devices", "signed_prekeys", "kem_last_resort_prekeys", "ec_prekeys", "kem_prekeys", "verification_sessions", "envelopes", "envelope_contents", "queue_shares", "send_receipts", "sealed_send_receipts", "attachment_buckets", "attachment_objects", "link_codes", "provisioning_mailboxes", "audit_log", "audit_key_check", "sms_budget", "push_targets"}
}

// DumpTable returns every row of table as column → value, for tests and
// audits that check what the relay keeps. table must be one of Tables().
func (db *DB) DumpTable(ctx context.Context, table string) ([]map[string]any, error) {
	known := false
	for _, t := range db.Tables() {
		known = known || t == table
	}
	if !known {
		return nil, fmt.Errorf("dump: unknown table %q", table)
	}
	rows, err := db.r.QueryContext(ctx, "SELECT * FROM "+table)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]any, len(cols))
		for i, c := range cols {
			m[c] = vals[i]
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (db *DB) tx(ctx context.Context, f func(*sql.Tx) error) error { return inTx(ctx, db.w, f) }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ExecRaw runs one statement directly. It exists for tests that play
// someone with write access to the database (altering the audit log, for
// instance); the relay never calls it.
func (db *DB) ExecRaw(ctx context.Context, query string, args ...any) error {
	_, err := db.w.ExecContext(ctx, query, args...)
	return err
}

// SchemaTables lists every table in the database, so a dump test can
// check that Tables misses none.
func (db *DB) SchemaTables(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, db.d.ListTables)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
