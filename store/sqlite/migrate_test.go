package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/store/storetest"
)

// upTo is the dialect with only its first n migrations.
func upTo(t *testing.T, n int) *store.Dialect { return storetest.UpTo(t, sqlite.Dialect(), n) }

// Migrations 0011 and 0012 on a queue in use: the counters are recounted
// from what is queued, and the rebuilt queue table keeps every envelope
// and continues seq past every seq ever used (envelopes acknowledged
// before the upgrade included), so no device cursor can pass a new one.
func TestQueueMigrations(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "q.db")+"?_pragma=foreign_keys(ON)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := store.Migrate(ctx, db, upTo(t, 10)); err != nil {
		t.Fatal(err)
	}
	const account = "00000000-0000-4000-8000-000000000001"
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO accounts (id, number_hash, identity_key, last_seen_day) VALUES ($1, $2, $3, 1)`, account, make([]byte, 32), make([]byte, 33))
	exec(`INSERT INTO devices (account_id, device_id, registration_id, credential, created_day, last_seen_day) VALUES ($1, 1, 1, $2, 1, 1)`, account, make([]byte, 48))
	for i := range 5 {
		exec(`INSERT INTO envelopes (id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size)
			VALUES ($1, $2, 1, 1, $2, 1, 1, 1, 9999999999999, 0, $3, 3)`, strings.Repeat("0", 35)+string(rune('a'+i)), account, []byte("abc"))
	}
	exec(`DELETE FROM envelopes WHERE seq > 2`) // acknowledged before the upgrade
	if _, err := store.Migrate(ctx, db, sqlite.Dialect()); err != nil {
		t.Fatal(err)
	}
	var n, bytes, last int64
	if err := db.QueryRowContext(ctx, `SELECT queue_envelopes, queue_bytes, queue_seq FROM devices`).Scan(&n, &bytes, &last); err != nil {
		t.Fatal(err)
	}
	if n != 2 || bytes != 6 || last != 2 {
		t.Errorf("counters after the migration: %d envelopes, %d bytes, last seq %d; want 2, 6, 2", n, bytes, last)
	}
	var kept int
	db.QueryRowContext(ctx, `SELECT count(*) FROM envelopes WHERE content = $1`, []byte("abc")).Scan(&kept)
	if kept != 2 {
		t.Errorf("%d envelopes kept their content, want 2", kept)
	}
	exec(`INSERT INTO envelopes (id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size)
		VALUES ($1, $2, 1, 1, $2, 1, 1, 1, 9999999999999, 0, $3, 3)`, strings.Repeat("1", 36), account, []byte("new"))
	var seq int64
	db.QueryRowContext(ctx, `SELECT seq FROM envelopes WHERE id = $1`, strings.Repeat("1", 36)).Scan(&seq)
	if seq <= 5 {
		t.Errorf("a new envelope got seq %d, reusing a seq handed out before the upgrade (up to 5)", seq)
	}
}
