package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
	// NoTransaction marks a migration whose file starts with the line
	// "-- parley:no-transaction": its statements run one by one outside a
	// transaction, for those PostgreSQL refuses inside one (CREATE INDEX
	// CONCURRENTLY, which builds an index without blocking writes to a
	// large table). Such a file must be safe to run again from the start
	// after failing part-way, and end each statement with ";" at the end of
	// a line.
	NoTransaction bool
}

// noTransaction is the first line of a migration that runs outside a
// transaction.
const noTransaction = "-- parley:no-transaction"

// checkSplittable refuses what Statements would split wrongly: a "$$"
// body spanning lines, two statements on one line, or text after a
// statement's closing ";".
func checkSplittable(sql string) error {
	for i, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--") {
			continue
		}
		if strings.Count(t, "$$")%2 != 0 {
			return fmt.Errorf("line %d: a $$ body must open and close on one line in a no-transaction migration", i+1)
		}
		if !strings.Contains(t, "$$") && (strings.Count(t, ";") > 1 || strings.Contains(t, ";") && !strings.HasSuffix(t, ";")) {
			return fmt.Errorf("line %d: in a no-transaction migration each statement ends with \";\" at the end of its own line", i+1)
		}
	}
	return nil
}

// Statements splits a no-transaction migration into its statements,
// without comment lines.
func (m Migration) Statements() []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(m.SQL) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if t := strings.TrimSpace(cur.String()); t != "" {
		out = append(out, t)
	}
	return out
}

// LoadMigrations reads files named NNNN_description.sql from fsys, sorted by
// number. Numbers must be unique and start at 1 without gaps.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %q: name must be NNNN_description.sql", name)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", name, err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		m := Migration{Version: v, Name: name, SQL: string(b), NoTransaction: strings.TrimSpace(first) == noTransaction}
		if m.NoTransaction {
			if err := checkSplittable(m.SQL); err != nil {
				return nil, fmt.Errorf("migration %q: %w", name, err)
			}
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %q: expected version %d (numbers must be 1, 2, 3, …)", m.Name, i+1)
		}
	}
	return ms, nil
}

// Migrate applies the dialect's migrations that db has not seen yet, each in
// its own transaction together with its row in schema_migrations (a
// NoTransaction migration's statements run one by one, and its row is
// written after the last). Concurrent callers (several replicas starting at
// once) are serialised by the dialect's lock. It returns how many
// migrations it applied.
func Migrate(ctx context.Context, db *sql.DB, d *Dialect) (applied int, err error) {
	ms, err := LoadMigrations(d.Migrations)
	if err != nil {
		return 0, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	if d.MigrationLock != "" {
		if err := takeMigrationLock(ctx, conn, d.MigrationLock); err != nil {
			return 0, err
		}
		defer func() {
			if _, uerr := conn.ExecContext(context.WithoutCancel(ctx), d.MigrationUnlock); uerr != nil && err == nil {
				err = fmt.Errorf("migrate: release lock: %w", uerr)
			}
		}()
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return 0, fmt.Errorf("migrate: read version: %w", err)
	}
	if current > len(ms) {
		return 0, fmt.Errorf("migrate: database is at schema version %d but this binary knows only %d; run a newer parleyd", current, len(ms))
	}
	for _, m := range ms[current:] {
		if m.NoTransaction {
			for _, q := range m.Statements() {
				if _, err := conn.ExecContext(ctx, q); err != nil {
					return applied, fmt.Errorf("migrate: apply %s: %w", m.Name, err)
				}
			}
			if _, err := conn.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return applied, fmt.Errorf("migrate: record %s: %w", m.Name, err)
			}
			applied++
			continue
		}
		if err := inTx(ctx, conn, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		}); err != nil {
			return applied, fmt.Errorf("migrate: apply %s: %w", m.Name, err)
		}
		applied++
	}
	return applied, nil
}

// takeMigrationLock polls the dialect's try-lock query until it answers
// true. Polling rather than a blocking lock call matters: a replica blocked
// inside a lock statement holds a snapshot, and CREATE INDEX CONCURRENTLY
// in the lock holder's migration waits for every older snapshot to end, a
// deadlock.
func takeMigrationLock(ctx context.Context, conn *sql.Conn, q string) error {
	for {
		var ok bool
		if err := conn.QueryRowContext(ctx, q).Scan(&ok); err != nil {
			return fmt.Errorf("migrate: take lock: %w", err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrate: waiting for another replica's migration: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// inTx runs f in a transaction, committing if it returns nil.
func inTx(ctx context.Context, db txBeginner, f func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil && rerr != sql.ErrTxDone {
				err = fmt.Errorf("%w (rollback: %v)", err, rerr)
			}
		}
	}()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}
