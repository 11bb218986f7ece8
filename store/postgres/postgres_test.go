package postgres_test

import (
	"context"
	"testing"

	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/postgres"
	"github.com/parleyhq/parley/store/postgres/pgtest"
	"github.com/parleyhq/parley/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.DB {
		db, err := postgres.Open(context.Background(), pgtest.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}

func BenchmarkStore(b *testing.B) {
	db, err := postgres.Open(context.Background(), pgtest.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	storetest.Bench(b, db)
}
