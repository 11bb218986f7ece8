package clientdb

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/cli/vault"
)

// openTestDB opens a fresh database sealed with a new key file; it returns
// the database and its directory.
func openTestDB(t *testing.T) (*DB, string) {
	t.Helper()
	dir := t.TempDir()
	key, err := vault.Create(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(context.Background(), filepath.Join(dir, "state.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dir
}

func TestSeenEnvelopes(t *testing.T) {
	ctx := context.Background()
	db, _ := openTestDB(t)
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

// TestAdoptBucket: the first bucket is kept, a later one only if its id is
// smaller (so two sides that created buckets at once converge), secrets are
// sealed at rest.
func TestAdoptBucket(t *testing.T) {
	ctx := context.Background()
	db, dir := openTestDB(t)
	secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	adopt := func(id string, s byte) (bool, Bucket) {
		var ok bool
		var cur Bucket
		if err := db.Update(ctx, func(tx *Tx) (err error) {
			if ok, err = tx.AdoptBucket(ctx, "peer", Bucket{ID: id, MemberSecret: secret(s), AdminSecret: secret(s + 1)}); err != nil {
				return err
			}
			cur, err = tx.Bucket(ctx, "peer")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ok, cur
	}
	if ok, cur := adopt("M", 1); !ok || cur.ID != "M" || !bytes.Equal(cur.MemberSecret, secret(1)) || !bytes.Equal(cur.AdminSecret, secret(2)) {
		t.Fatalf("first bucket: %v %+v", ok, cur)
	}
	if ok, cur := adopt("Z", 5); ok || cur.ID != "M" {
		t.Fatalf("a larger id replaced the bucket: %v %+v", ok, cur)
	}
	if ok, cur := adopt("M", 1); !ok || cur.ID != "M" {
		t.Fatalf("the same bucket again: %v %+v", ok, cur)
	}
	if ok, cur := adopt("A", 7); !ok || cur.ID != "A" || !bytes.Equal(cur.MemberSecret, secret(7)) {
		t.Fatalf("a smaller id did not win: %v %+v", ok, cur)
	}
	db.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, "state.db"))
	if bytes.Contains(raw, secret(7)) || bytes.Contains(raw, secret(8)) {
		t.Fatal("bucket secrets stored in the clear")
	}
}

// TestSealMetadataMigration: a store from before migration 6 keeps its
// contacts and timers, now sealed: numbers, identity keys, trust and timer
// values leave the clear columns, and lookups by number still work.
func TestSealMetadataMigration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key, err := vault.Create(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.db")
	db, err := Open(ctx, path, key)
	if err != nil {
		t.Fatal(err)
	}
	// Put the store back to version 5 with clear rows, as before.
	ik := bytes.Repeat([]byte{5}, 33)
	err = db.Update(ctx, func(tx *Tx) error {
		for _, q := range []string{
			`DROP INDEX recipients_number_index`,
			`ALTER TABLE recipients DROP COLUMN number_index`,
			`ALTER TABLE recipients DROP COLUMN number_sealed`,
			`ALTER TABLE recipients DROP COLUMN identity_sealed`,
			`DROP TABLE conversation_timers`,
			`DROP TABLE profile_keys`, // migration 7's
			`DROP TABLE refs`,         // migration 8's
			`DELETE FROM recipients`,  // stored under pseudonyms
			`PRAGMA user_version = 5`,
		} {
			if _, err := tx.tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		if _, err := tx.tx.ExecContext(ctx, `INSERT INTO recipients (account_id, number, identity_key, trust, key_added_ms) VALUES ('acct', '+15555550123', ?, 2, 77)`, ik); err != nil {
			return err
		}
		_, err := tx.tx.ExecContext(ctx, `INSERT INTO timers (conversation, seconds) VALUES ('acct', 3600)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(ctx, path, key); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(ctx, func(tx *Tx) error {
		r, err := tx.RecipientByNumber(ctx, "+15555550123")
		if err != nil || r.Account != "acct" || r.Trust != 2 || r.KeyAddedMS != 77 || !bytes.Equal(r.IdentityKey, ik) {
			t.Errorf("recipient after the migration: %+v %v", r, err)
		}
		if s, err := tx.Timer(ctx, "acct"); err != nil || s != 3600 {
			t.Errorf("timer after the migration: %d %v", s, err)
		}
		var clear int
		tx.tx.QueryRowContext(ctx, `SELECT count(*) FROM recipients WHERE number IS NOT NULL OR identity_key IS NOT NULL OR trust <> 0 OR key_added_ms <> 0`).Scan(&clear)
		var timers int
		tx.tx.QueryRowContext(ctx, `SELECT count(*) FROM timers`).Scan(&timers)
		if clear != 0 || timers != 0 {
			t.Errorf("clear rows left: %d recipients, %d timers", clear, timers)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPseudonymsMigration: a store from before migration 8 keeps every
// contact, session, message, bucket, timer, profile key, group and sender
// key, now under pseudonyms: no account or group id is left in the file,
// and the lists that name ids still name them.
func TestPseudonymsMigration(t *testing.T) {
	ctx := context.Background()
	db, dir := openTestDB(t)
	const alice, group = "6f1c2a9e-0000-4000-8000-00000000a11c", "group-id-kept-private"
	var others []string
	for i := range 20 {
		others = append(others, fmt.Sprintf("6f1c2a9e-0000-4000-8000-%012d", i))
	}
	ik := bytes.Repeat([]byte{5}, 33)
	secret := bytes.Repeat([]byte{9}, 32)
	err := db.Update(ctx, func(tx *Tx) error {
		for _, step := range []func() error{
			func() error {
				return tx.PutRecipient(ctx, Recipient{Account: alice, Number: "+15555550123", IdentityKey: ik, Trust: TrustedVerified})
			},
			func() error { return tx.PutSession(ctx, alice, 1, []byte("session")) },
			func() error {
				_, err := tx.AddMessage(ctx, Message{Conversation: alice, SentMS: 7, Body: []byte("hello")})
				return err
			},
			func() error { return tx.ReplaceBucket(ctx, alice, Bucket{ID: "b1", MemberSecret: secret}) },
			func() error { _, err := tx.SetTimer(ctx, alice, 60); return err },
			func() error { return tx.SetProfileKey(ctx, alice, secret) },
			func() error { return tx.PutGroup(ctx, group, []byte("state")) },
			func() error { return tx.PutSenderKey(ctx, group, alice, 1, []byte("sender key")) },
			func() error { return tx.MarkShared(ctx, group, alice) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		// Enough rows for many pages, so old bytes could linger in free ones.
		for _, id := range others {
			if err := tx.PutSession(ctx, id, 1, bytes.Repeat([]byte{1}, 200)); err != nil {
				return err
			}
			for i := range 40 {
				if _, err := tx.AddMessage(ctx, Message{Conversation: id, SentMS: int64(i), Body: bytes.Repeat([]byte{2}, 200)}); err != nil {
					return err
				}
			}
		}
		// Back to version 7: ids in the clear, as before the migration.
		for _, c := range idColumns {
			refs, err := column[string](ctx, tx, `SELECT DISTINCT `+c.column+` FROM `+c.table)
			if err != nil {
				return err
			}
			for _, ref := range refs {
				id := map[string]string{tx.ref(alice): alice, tx.ref(group): group}[ref]
				for _, o := range others {
					if ref == tx.ref(o) {
						id = o
					}
				}
				if _, err := tx.tx.ExecContext(ctx, `UPDATE `+c.table+` SET `+c.column+` = ? WHERE `+c.column+` = ?`, id, ref); err != nil {
					return err
				}
			}
		}
		for _, q := range []string{`DROP TABLE refs`, `PRAGMA user_version = 7`} {
			if _, err := tx.tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	key, err := vault.Load(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db, err = Open(ctx, filepath.Join(dir, "state.db"), key); err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *Tx) error {
		if r, err := tx.RecipientByNumber(ctx, "+15555550123"); err != nil || r.Account != alice || !bytes.Equal(r.IdentityKey, ik) {
			t.Errorf("recipient: %+v %v", r, err)
		}
		if rs, err := tx.Recipients(ctx); err != nil || len(rs) != 1 || rs[0].Account != alice {
			t.Errorf("recipients: %+v %v", rs, err)
		}
		if v, err := tx.Session(ctx, alice, 1); err != nil || string(v) != "session" {
			t.Errorf("session: %q %v", v, err)
		}
		if ms, err := tx.Messages(ctx, alice, 10); err != nil || len(ms) != 1 || string(ms[0].Body) != "hello" || ms[0].Conversation != alice {
			t.Errorf("messages: %+v %v", ms, err)
		}
		if b, err := tx.Bucket(ctx, alice); err != nil || b.ID != "b1" {
			t.Errorf("bucket: %+v %v", b, err)
		}
		if s, err := tx.Timer(ctx, alice); err != nil || s != 60 {
			t.Errorf("timer: %d %v", s, err)
		}
		if k, err := tx.ProfileKey(ctx, alice); err != nil || !bytes.Equal(k, secret) {
			t.Errorf("profile key: %v", err)
		}
		if ids, err := tx.GroupIDs(ctx); err != nil || len(ids) != 1 || ids[0] != group {
			t.Errorf("groups: %v %v", ids, err)
		}
		if v, err := tx.SenderKey(ctx, group, alice, 1); err != nil || string(v) != "sender key" {
			t.Errorf("sender key: %q %v", v, err)
		}
		if gs, err := tx.SenderKeyGroups(ctx, alice, 1); err != nil || len(gs) != 1 || gs[0] != group {
			t.Errorf("sender key groups: %v %v", gs, err)
		}
		if ws, err := tx.SharedWith(ctx, group); err != nil || len(ws) != 1 || ws[0] != alice {
			t.Errorf("shared with: %v %v", ws, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "state.db*"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		for _, id := range append([]string{alice, group}, others...) {
			if bytes.Contains(raw, []byte(id)) {
				t.Errorf("%s holds %q in the clear", f, id)
			}
		}
	}
}

// TestNewerSchemaRefused: a database written by a newer parley is not
// opened (an older one would write beside rows it cannot read).
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	db, dir := openTestDB(t)
	if err := db.Update(ctx, func(tx *Tx) error {
		_, err := tx.tx.ExecContext(ctx, `PRAGMA user_version = 999`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	key, err := vault.Load(filepath.Join(dir, "key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db, err := Open(ctx, filepath.Join(dir, "state.db"), key); err == nil || !strings.Contains(err.Error(), "newer parley") {
		if db != nil {
			db.Close()
		}
		t.Fatalf("opened a schema-999 database: %v", err)
	}
}
