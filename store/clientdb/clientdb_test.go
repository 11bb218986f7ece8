package clientdb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/cli/vault"
)

func TestSeenEnvelopes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key, err := vault.Create(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(ctx, filepath.Join(dir, "state.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mark := func(hash, id string, ms int64) (bool, string) {
		var fresh bool
		var first string
		if err := db.Update(ctx, func(tx *Tx) (err error) {
			fresh, first, err = tx.MarkSeen(ctx, []byte(hash), id, ms)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return fresh, first
	}
	if fresh, _ := mark("h1", "e1", 100); !fresh {
		t.Fatal("first sighting not fresh")
	}
	if fresh, first := mark("h1", "e1", 200); fresh || first != "e1" {
		t.Errorf("redelivery: fresh %v, first %q", fresh, first)
	}
	if fresh, first := mark("h1", "e2", 200); fresh || first != "e1" {
		t.Errorf("replay: fresh %v, first %q", fresh, first)
	}
	mark("h2", "e3", 300)
	if err := db.Update(ctx, func(tx *Tx) error { return tx.ForgetSeen(ctx, 200) }); err != nil {
		t.Fatal(err)
	}
	if fresh, _ := mark("h1", "e4", 400); !fresh {
		t.Error("a hash older than the cut-off was not forgotten")
	}
	if fresh, _ := mark("h2", "e3", 400); fresh {
		t.Error("a hash newer than the cut-off was forgotten")
	}
}
