package store

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// ErrBackupUnsupported reports a backup asked of a database that has its
// own tools for it (PostgreSQL: pg_dump).
var ErrBackupUnsupported = errors.New("this database is backed up with its own tools (PostgreSQL: pg_dump; deploy/README.md)")

// Backup writes a consistent copy of the embedded database to path while
// the relay keeps serving (SQLite's VACUUM INTO: one read transaction, so
// the copy is the database at one moment). path must not exist.
func (db *DB) Backup(ctx context.Context, path string) error {
	if db.d.Name != "sqlite" {
		return ErrBackupUnsupported
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists; a backup never replaces a file", path)
	}
	if _, err := db.w.ExecContext(ctx, `VACUUM INTO $1`, path); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return os.Chmod(path, 0o600)
}
