// Package postgres opens the relay's PostgreSQL database through pgx/v5, for
// deployments that run several relay replicas against one database.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/parleyhq/parley/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLockKey is an arbitrary constant identifying the advisory lock
// that serialises migrations across replicas.
const migrationLockKey = 0x7061726c6579 // "parley"

// Dialect returns PostgreSQL's statements.
func Dialect() *store.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory always exists
	}
	// SKIP LOCKED lets concurrent claimers take different keys instead of
	// queueing on (and then missing) the same row.
	return &store.Dialect{
		Name:            "postgres",
		Migrations:      sub,
		MigrationLock:   fmt.Sprintf("SELECT pg_try_advisory_lock(%d)", migrationLockKey),
		MigrationUnlock: fmt.Sprintf("SELECT pg_advisory_unlock(%d)", migrationLockKey),
		ClaimEC: `DELETE FROM ec_prekeys WHERE (account_id, device_id, key_id) =
			(SELECT account_id, device_id, key_id FROM ec_prekeys WHERE account_id = $1 AND device_id = $2
			 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING key_id, public_key`,
		ClaimKEM: `DELETE FROM kem_prekeys WHERE (account_id, device_id, key_id) =
			(SELECT account_id, device_id, key_id FROM kem_prekeys WHERE account_id = $1 AND device_id = $2
			 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING key_id, public_key, signature`,
		LockRows:   " FOR NO KEY UPDATE",
		ListTables: `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1`,
		AuditLock:  fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", migrationLockKey+1),
		IsUniqueViolation: func(err error) bool {
			var e *pgconn.PgError
			return errors.As(err, &e) && e.Code == "23505"
		},
		QueueTx: queueTx,
	}
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and applies pending migrations.
func Open(ctx context.Context, dsn string) (*store.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("connect to postgres: %w", err), db.Close())
	}
	s := store.New(db, db, Dialect())
	if _, err := s.Migrate(ctx); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}
