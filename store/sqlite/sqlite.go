// Package sqlite opens the relay's embedded database: pure-Go SQLite
// (modernc.org/sqlite, no cgo) in WAL mode, with one writer connection and a
// pool of readers. By default every commit is synced to disk before it
// returns (synchronous=FULL), so an acknowledged send survives a power cut.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"strings"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parleyhq/parley/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect returns SQLite's statements.
func Dialect() *store.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory always exists
	}
	// The single writer connection serialises claims, so a plain
	// DELETE … RETURNING of the lowest id is atomic.
	return &store.Dialect{
		Name:       "sqlite",
		ListTables: `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1`,
		Migrations: sub,
		ClaimEC: `DELETE FROM ec_prekeys WHERE account_id = $1 AND device_id = $2 AND key_id =
			(SELECT min(key_id) FROM ec_prekeys WHERE account_id = $1 AND device_id = $2)
			RETURNING key_id, public_key`,
		ClaimKEM: `DELETE FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 AND key_id =
			(SELECT min(key_id) FROM kem_prekeys WHERE account_id = $1 AND device_id = $2)
			RETURNING key_id, public_key, signature`,
		IsUniqueViolation: func(err error) bool {
			var e *msqlite.Error
			return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
		},
	}
}

// Synchronous is how hard SQLite works to make a commit durable (its
// synchronous pragma, in WAL mode).
type Synchronous string

const (
	// Full syncs the write-ahead log to disk at every commit: a committed
	// transaction survives a crash of parleyd, of the operating system and
	// a power cut. The default.
	Full Synchronous = "full"
	// Normal syncs only at checkpoints: a commit survives a crash of
	// parleyd, but an operating-system crash or power cut can undo the
	// last commits, including envelopes whose send was acknowledged.
	// Faster; an explicit opt-in.
	Normal Synchronous = "normal"
)

// ParseSynchronous parses "full" or "normal".
func ParseSynchronous(s string) (Synchronous, error) {
	switch v := Synchronous(s); v {
	case Full, Normal:
		return v, nil
	}
	return "", fmt.Errorf("sqlite synchronous %q: want full or normal", s)
}

// Options tunes Open. The zero value is the durable default.
type Options struct {
	// Synchronous is the durability of commits; empty means Full.
	Synchronous Synchronous
}

// Open opens (creating if needed) the database file at path with the
// default Options (every commit synced) and applies pending migrations.
func Open(ctx context.Context, path string) (*store.DB, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, o Options) (*store.DB, error) {
	syncMode := o.Synchronous
	if syncMode == "" {
		syncMode = Full
	}
	if _, err := ParseSynchronous(string(syncMode)); err != nil {
		return nil, err
	}
	dsn := func(extra string) string {
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
			"&_pragma=synchronous(" + strings.ToUpper(string(syncMode)) + ")&_pragma=foreign_keys(ON)" + extra
	}
	w, err := sql.Open("sqlite", dsn("&_txlock=immediate"))
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	w.SetMaxOpenConns(1) // SQLite has one writer; queue in Go, not on SQLITE_BUSY
	r, err := sql.Open("sqlite", dsn("&_pragma=query_only(ON)"))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open sqlite: %w", err), w.Close())
	}
	r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	db := store.New(w, r, Dialect())
	if _, err := db.Migrate(ctx); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}
