// Package pgtest gives each test its own PostgreSQL database on the server
// that `make test` starts (scripts/with-postgres), dropped when the test ends.
//
// PARLEY_TEST_POSTGRES holds a DSN for a role that may create databases.
// When it is unset the test is skipped, unless PARLEY_TEST_POSTGRES_REQUIRED
// is set (as `make test` and CI do), in which case it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver
)

// Database creates a fresh, empty database and returns its DSN.
func Database(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("PARLEY_TEST_POSTGRES")
	if admin == "" {
		if os.Getenv("PARLEY_TEST_POSTGRES_REQUIRED") != "" {
			t.Fatal("PARLEY_TEST_POSTGRES is not set but PARLEY_TEST_POSTGRES_REQUIRED is: run the tests with `make test`")
		}
		t.Skip("PostgreSQL tests need PARLEY_TEST_POSTGRES (run `make test`)")
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("PARLEY_TEST_POSTGRES: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := make([]byte, 8)
	rand.Read(b)
	name := "parley_test_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database (is PostgreSQL running? `make test` starts it): %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db, err := sql.Open("pgx", admin)
		if err != nil {
			t.Error(err)
			return
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
