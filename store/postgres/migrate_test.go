package postgres_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/postgres"
	"github.com/parleyhq/parley/store/postgres/pgtest"
	"github.com/parleyhq/parley/store/storetest"
)

// upTo is PostgreSQL's dialect with only its first n migrations, to put a
// database where an older parleyd left it.
func upTo(t *testing.T, n int) *store.Dialect { return storetest.UpTo(t, postgres.Dialect(), n) }

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Upgrading a database whose queue is in use must not stop sends while
// the new queue index is built: a plain CREATE INDEX waits for the
// running send's transaction while holding every later send behind it.
// Two replicas start the upgrade at once, as a rolling deploy does.
func TestQueueIndexMigrationDoesNotBlockSends(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.Database(t)
	db := openDB(t, dsn)
	if _, err := store.Migrate(ctx, db, upTo(t, 7)); err != nil {
		t.Fatal(err)
	}
	// A send in progress: its transaction holds the lock an INSERT takes.
	running, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Rollback()
	if _, err := running.ExecContext(ctx, `LOCK TABLE envelopes IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			replica := openDB(t, dsn)
			_, errs[i] = store.Migrate(ctx, replica, upTo(t, 8)) // 0011 drops the index again
		})
	}
	// Wait until the migration waits on the running send.
	for {
		var waiting int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%CREATE INDEX%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the migration never reached the index build")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Another send starts meanwhile: it must get its lock at once.
	next, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.ExecContext(ctx, `SET LOCAL lock_timeout = '3s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := next.ExecContext(ctx, `LOCK TABLE envelopes IN ROW EXCLUSIVE MODE`); err != nil {
		t.Errorf("a send during the index build: %v", err)
	}
	next.Rollback()
	running.Rollback()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	checkQueueIndexes(ctx, t, db)
}

// A migration that fails part-way through its statements runs again from
// the start: an invalid index left by a failed build is rebuilt, a valid
// one is kept (dropping it would leave the queue with no index at all while
// it is built again).
func TestQueueIndexMigrationResumes(t *testing.T) {
	for _, c := range []struct {
		name  string
		valid bool
	}{{"after a failed build", false}, {"after the build", true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			db := openDB(t, pgtest.Database(t))
			if _, err := store.Migrate(ctx, db, upTo(t, 7)); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `CREATE INDEX envelopes_queue_source ON envelopes (account_id, device_id, source_account, size)`); err != nil {
				t.Fatal(err)
			}
			if !c.valid { // what a failed CREATE INDEX CONCURRENTLY leaves
				if _, err := db.ExecContext(ctx, `UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'envelopes_queue_source'::regclass`); err != nil {
					t.Fatal(err)
				}
			}
			var before, after int64
			db.QueryRowContext(ctx, `SELECT 'envelopes_queue_source'::regclass::oid`).Scan(&before)
			if _, err := store.Migrate(ctx, db, upTo(t, 8)); err != nil {
				t.Fatal(err)
			}
			checkQueueIndexes(ctx, t, db)
			db.QueryRowContext(ctx, `SELECT 'envelopes_queue_source'::regclass::oid`).Scan(&after)
			if (before == after) != c.valid {
				t.Errorf("index kept: %v, want %v", before == after, c.valid)
			}
		})
	}
}

// The no-transaction migration splits into its statements whole.
func TestQueueIndexMigrationStatements(t *testing.T) {
	ms, err := store.LoadMigrations(postgres.Dialect().Migrations)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[7]
	got := m.Statements()
	if !m.NoTransaction || len(got) != 4 || !strings.HasPrefix(got[0], "DO $$") || !strings.HasPrefix(got[3], "ALTER TABLE") {
		t.Fatalf("%s: no-transaction %v, statements %q", m.Name, m.NoTransaction, got)
	}
	for _, m := range ms {
		if m.NoTransaction != (m.Version == 8) {
			t.Errorf("%s: no-transaction %v", m.Name, m.NoTransaction)
		}
	}
}

func checkQueueIndexes(ctx context.Context, t *testing.T, db *sql.DB) {
	t.Helper()
	var version int
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != 8 { // the tests migrate up to 0008, which built the index
		t.Errorf("schema version %d, want 8", version)
	}
	rows, err := db.QueryContext(ctx, `SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'envelopes'::regclass AND c.relname LIKE 'envelopes_queue%' ORDER BY c.relname`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		var valid bool
		if err := rows.Scan(&name, &valid); err != nil {
			t.Fatal(err)
		}
		if !valid {
			name += " (invalid)"
		}
		got = append(got, name)
	}
	if strings.Join(got, ",") != "envelopes_queue,envelopes_queue_source" {
		t.Errorf("queue indexes %v, want envelopes_queue and envelopes_queue_source, both valid", got)
	}
}

// A migration that fails releases the migration lock: the next replica to
// start (or this one, restarted) applies it.
func TestFailedMigrationReleasesTheLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := pgtest.Database(t)
	broken := upTo(t, 9)
	broken.Migrations.(fstest.MapFS)["0010_broken.sql"] = &fstest.MapFile{Data: []byte("-- parley:no-transaction\nSELECT 1;\nSELECT no_such_column FROM envelopes;\n")}
	if _, err := store.Migrate(ctx, openDB(t, dsn), broken); err == nil {
		t.Fatal("the broken migration applied")
	}
	n, err := store.Migrate(ctx, openDB(t, dsn), postgres.Dialect())
	if err != nil {
		t.Fatalf("migrate after a failed migration: %v", err)
	}
	ms, _ := store.LoadMigrations(postgres.Dialect().Migrations)
	if n != len(ms)-9 {
		t.Errorf("applied %d, want %d", n, len(ms)-9)
	}
}

// Migrations 0011 and 0012 on a queue in use: the counters and shares are
// recounted from what is queued, and every envelope keeps its content.
func TestQueueCounterMigration(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, pgtest.Database(t))
	if _, err := store.Migrate(ctx, db, upTo(t, 10)); err != nil {
		t.Fatal(err)
	}
	const account, sender = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO accounts (id, number_hash, identity_key, last_seen_day) VALUES ($1, $2, $3, 1)`, account, make([]byte, 32), make([]byte, 33))
	exec(`INSERT INTO devices (account_id, device_id, registration_id, credential, created_day, last_seen_day) VALUES ($1, 1, 1, $2, 1, 1)`, account, make([]byte, 48))
	for i := range 3 {
		exec(`INSERT INTO envelopes (id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size)
			VALUES (gen_random_uuid(), $1, 1, 1, $2, 1, 1, 1, 9999999999999, false, $3, $4)`, account, sender, []byte("abcd")[:i+1], i+1)
	}
	if _, err := store.Migrate(ctx, db, postgres.Dialect()); err != nil {
		t.Fatal(err)
	}
	var n, bytes, last, maxSeq int64
	if err := db.QueryRowContext(ctx, `SELECT queue_envelopes, queue_bytes, queue_seq FROM devices`).Scan(&n, &bytes, &last); err != nil {
		t.Fatal(err)
	}
	db.QueryRowContext(ctx, `SELECT max(seq) FROM envelopes`).Scan(&maxSeq)
	if n != 3 || bytes != 6 || last != maxSeq {
		t.Errorf("counters after the migration: %d envelopes, %d bytes, last seq %d; want 3, 6, %d", n, bytes, last, maxSeq)
	}
	var shareN, shareBytes int64
	if err := db.QueryRowContext(ctx, `SELECT envelopes, bytes FROM queue_shares WHERE source_account = $1`, sender).Scan(&shareN, &shareBytes); err != nil || shareN != 3 || shareBytes != 6 {
		t.Errorf("sender's share after the migration: %d envelopes, %d bytes (%v); want 3, 6", shareN, shareBytes, err)
	}
	var kept int
	db.QueryRowContext(ctx, `SELECT count(*) FROM envelopes WHERE content IS NOT NULL AND content_id IS NULL`).Scan(&kept)
	if kept != 3 {
		t.Errorf("%d envelopes kept their content, want 3", kept)
	}
}
