// Package sqlite opens the relay's embedded database: pure-Go SQLite
// (modernc.org/sqlite, no cgo) in WAL mode, with one writer connection and a
// pool of readers.
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

// Open opens (creating if needed) the database file at path and applies
// pending migrations.
func Open(ctx context.Context, path string) (*store.DB, error) {
	dsn := func(extra string) string {
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
			"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)" + extra
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
