package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/bench"
	"github.com/parleyhq/parley/cli/clientdb"
	"github.com/parleyhq/parley/protocol"
)

// makeLegacy rewrites a's store into the formats parley kept before PQXDH
// (go.mau.fi/libsignal): sessions and prekeys as that library's JSON
// records, ML-KEM seeds in place of Kyber keys, and no protocol marker.
func makeLegacy(t *testing.T, a *Account) {
	t.Helper()
	ctx := context.Background()
	err := a.db.Update(ctx, func(tx *clientdb.Tx) error {
		if err := tx.DeleteValue(ctx, metaProtocol); err != nil {
			return err
		}
		rs, err := tx.Recipients(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			devs, err := tx.SessionDevices(ctx, r.Account)
			if err != nil {
				return err
			}
			for _, d := range devs {
				if err := tx.PutSession(ctx, r.Account, d, []byte(`{"SessionState":{"SessionVersion":3}}`)); err != nil {
					return err
				}
			}
		}
		ids, err := tx.KeyIDs(ctx, "prekeys")
		if err != nil {
			return err
		}
		for _, id := range ids {
			priv, err := tx.PreKey(ctx, id)
			if err != nil {
				return err
			}
			kp, _ := protocol.KeyPairFromPrivate(priv)
			b, _ := json.Marshal(map[string]any{"ID": id, "PublicKey": kp.Public.Raw(), "PrivateKey": priv})
			if err := tx.PutPreKey(ctx, id, b); err != nil {
				return err
			}
		}
		signed, created, err := tx.SignedPreKeyIDs(ctx)
		if err != nil {
			return err
		}
		for i, id := range signed {
			rec, err := tx.SignedPreKey(ctx, id)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(map[string]any{"ID": id, "PrivateKey": rec[:32], "Signature": rec[32:], "Timestamp": created[i]})
			if err := tx.PutSignedPreKey(ctx, id, created[i], b); err != nil {
				return err
			}
		}
		last, err := tx.MaxKeyID(ctx, "kem_prekeys")
		if err != nil {
			return err
		}
		if err := tx.DeleteKEMPreKeys(ctx); err != nil {
			return err
		}
		for id := uint32(1); id <= last; id++ {
			if err := tx.PutKEMPreKey(ctx, id, id == 1, make([]byte, 64)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFromX3DH: a store written before PQXDH is upgraded when the
// account opens: the user is told once how many old sessions were dropped,
// prekeys keep working, the unusable Kyber keys are replaced on the relay,
// and the next conversation builds PQXDH sessions. Contacts, trust and
// history are kept.
func TestUpgradeFromX3DH(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "before", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := texts(receiveAll(t, bob)); strings.Join(got, ",") != "before" {
		t.Fatalf("before the upgrade: %v", got)
	}
	makeLegacy(t, bob)
	dir := filepath.Dir(bob.Dir())
	bob.Close()

	var notices []string
	open := func() *Account {
		a, err := Open(ctx, Options{Dir: dir, Number: bench.Number(1), Server: server, Notice: func(s string) { notices = append(notices, s) }})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	bob = open()
	if len(notices) != 1 || !strings.Contains(notices[0], "1 session(s) of the old protocol (X3DH) were dropped") {
		t.Fatalf("notices after the upgrade: %q", notices)
	}
	bob.Close()
	bob = open()
	t.Cleanup(func() { bob.Close() })
	if len(notices) != 1 {
		t.Fatalf("the upgrade was announced again: %q", notices)
	}
	err := bob.db.Update(ctx, func(tx *clientdb.Tx) error {
		n, err := tx.CountSessions(ctx)
		if err != nil || n != 0 {
			t.Errorf("sessions after the upgrade: %d %v", n, err)
		}
		ids, err := tx.KeyIDs(ctx, "prekeys")
		if err != nil || len(ids) == 0 {
			t.Fatalf("one-time prekeys lost: %v %v", ids, err)
		}
		if _, err := bob.store(tx).LoadPreKey(ctx, ids[0]); err != nil {
			t.Errorf("converted one-time prekey: %v", err)
		}
		signed, _, err := tx.SignedPreKeyIDs(ctx)
		if err != nil || len(signed) != 1 {
			t.Fatalf("signed prekeys: %v %v", signed, err)
		}
		if _, err := bob.store(tx).LoadSignedPreKey(ctx, signed[0]); err != nil {
			t.Errorf("converted signed prekey: %v", err)
		}
		h, err := tx.Messages(ctx, alice.ID, 10)
		if err != nil || len(h) != 1 {
			t.Errorf("history after the upgrade: %d messages, %v", len(h), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = bob.db.Update(ctx, func(tx *clientdb.Tx) error {
		if _, err := tx.Value(ctx, metaKEMReplace); err != nil {
			t.Errorf("no replacement of the ML-KEM keys pending after the upgrade: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bob.Maintain(ctx)
	err = bob.db.Update(ctx, func(tx *clientdb.Tx) error {
		if _, err := tx.Value(ctx, metaKEMReplace); err == nil {
			t.Error("the replacement is still pending after Maintain")
		}
		if _, _, err := tx.KEMPreKey(ctx, 1); err == nil {
			t.Error("an ML-KEM key of before the upgrade is still stored")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count, err := bob.relay.CountKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if count.PQ != PreKeyBatch {
		t.Errorf("the relay holds %d one-time Kyber prekeys after the replacement, want %d (the old ones gone)", count.PQ, PreKeyBatch)
	}

	// Bob writes first: a new PQXDH session; Alice answers on it.
	if _, res, err := bob.SendText(ctx, "after the upgrade", alice.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := texts(receiveAll(t, alice)); strings.Join(got, ",") != "after the upgrade" {
		t.Fatalf("alice after bob's upgrade: %v", got)
	}
	if _, res, err := alice.SendText(ctx, "welcome back", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := texts(receiveAll(t, bob)); !strings.Contains(strings.Join(got, ","), "welcome back") {
		t.Fatalf("bob after the upgrade: %v", got)
	}
}

// TestUnansweredSessionRestarts: a session we started that went
// unanswered longer than protocol.MaxUnacknowledgedSessionAge is not sent
// on again; the next send fetches a new bundle and starts a new session
// (the old one archived), and the message is delivered, not dropped.
func TestUnansweredSessionRestarts(t *testing.T) {
	ctx := context.Background()
	server := startRelay(t)
	alice, bob := newAccount(t, server, 0), newAccount(t, server, 1)
	if _, res, err := alice.SendText(ctx, "one", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	later := time.Now().Add(protocol.MaxUnacknowledgedSessionAge + 24*time.Hour)
	alice.now = func() time.Time { return later }
	if _, res, err := alice.SendText(ctx, "two", bob.Number); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := strings.Join(texts(receiveAll(t, bob)), ","); got != "one,two" {
		t.Fatalf("bob received %q, want one,two", got)
	}
}
