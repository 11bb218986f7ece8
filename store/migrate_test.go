package store_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/parleyhq/parley/store"
)

func TestNoTransactionMigrations(t *testing.T) {
	load := func(sql string) ([]store.Migration, error) {
		return store.LoadMigrations(fstest.MapFS{"0001_x.sql": {Data: []byte(sql)}})
	}
	ms, err := load("-- parley:no-transaction\n-- a comment; with a semicolon\nCREATE INDEX CONCURRENTLY a\n    ON t (x);\n\nDO $$ BEGIN PERFORM 1; END $$;\nDROP INDEX b;\n")
	if err != nil {
		t.Fatal(err)
	}
	got := ms[0].Statements()
	want := []string{"CREATE INDEX CONCURRENTLY a\n    ON t (x);", "DO $$ BEGIN PERFORM 1; END $$;", "DROP INDEX b;"}
	if !ms[0].NoTransaction || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("statements %q, want %q", got, want)
	}
	for _, bad := range []string{
		"-- parley:no-transaction\nDO $$\nBEGIN PERFORM 1; END\n$$;\n",
		"-- parley:no-transaction\nDROP INDEX a; -- gone\n",
		"-- parley:no-transaction\nDROP INDEX a; DROP INDEX b;\nSELECT 1\n",
	} {
		if _, err := load(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// Without the marker a file runs whole, in one transaction.
	if ms, err := load("DROP INDEX a; -- fine here\n"); err != nil || ms[0].NoTransaction {
		t.Errorf("transactional migration: %+v, %v", ms, err)
	}
}
