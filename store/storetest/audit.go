package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/store"
)

var auditTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"AuditChainDetectsTampering", testAuditChain},
	{"AuditConcurrentAppends", testAuditConcurrent},
	{"AuditTruncationDetectedAgainstCheckpoint", testAuditTruncation},
	{"AuditWrongKeyToldApartFromTampering", testAuditWrongKey},
}

func auditLog(t *testing.T, db *store.DB) *audit.Log {
	t.Helper()
	l, err := audit.New(db, bytes.Repeat([]byte{7}, 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.SetCoalesceWindow(0) // the tests write runs of identical entries
	return l
}

func testAuditChain(t *testing.T, db *store.DB) {
	ctx := context.Background()
	l := auditLog(t, db)
	for i := range 5 {
		if err := l.Record(ctx, audit.DeviceLinked, "acct", i+2, map[string]string{"n": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, first, last, err := l.Verify(ctx); err != nil || n != 5 || first != 1 || last != 5 {
		t.Fatalf("Verify = %d %d..%d, %v", n, first, last, err)
	}
	// Updates are refused by the database itself.
	if err := db.ExecRaw(ctx, `UPDATE audit_log SET kind = 'x' WHERE seq = 2`); err == nil {
		t.Fatal("the database accepted an update of the audit log")
	}
	// Someone with full database access drops that guard and edits a row,
	// deletes one, or cuts the front: each breaks the chain.
	dropGuard := map[string]string{
		"sqlite":   `DROP TRIGGER audit_log_append_only`,
		"postgres": `DROP TRIGGER audit_log_append_only ON audit_log`,
	}[db.Dialect()]
	if err := db.ExecRaw(ctx, dropGuard); err != nil {
		t.Fatal(err)
	}
	expectTampered := func(what string) {
		t.Helper()
		if _, _, _, err := l.Verify(ctx); !errors.Is(err, audit.ErrTampered) {
			t.Fatalf("%s: Verify = %v", what, err)
		}
	}
	if err := db.ExecRaw(ctx, `UPDATE audit_log SET device_id = 9 WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	expectTampered("edited entry")
	db.ExecRaw(ctx, `UPDATE audit_log SET device_id = 4 WHERE seq = 3`) // put it back
	if _, _, _, err := l.Verify(ctx); err != nil {
		t.Fatalf("restored entry: %v", err)
	}
	rows, _ := db.DumpTable(ctx, "audit_log")
	var saved map[string]any
	for _, r := range rows {
		if r["seq"] == int64(3) {
			saved = r
		}
	}
	db.ExecRaw(ctx, `DELETE FROM audit_log WHERE seq = 3`)
	expectTampered("deleted entry")
	db.ExecRaw(ctx, `INSERT INTO audit_log (seq, at, kind, account_id, device_id, details, prev_mac, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		saved["seq"], saved["at"], saved["kind"], saved["account_id"], saved["device_id"], saved["details"], saved["prev_mac"], saved["mac"])
	if _, _, _, err := l.Verify(ctx); err != nil {
		t.Fatalf("reinserted entry: %v", err)
	}
	db.ExecRaw(ctx, `DELETE FROM audit_log WHERE seq <= 2`)
	expectTampered("front cut without a purge")
}

func testAuditConcurrent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	l := auditLog(t, db)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := l.Record(ctx, audit.KeysUploaded, "acct", 1, map[string]string{"i": fmt.Sprint(i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, _, last, err := l.Verify(ctx); err != nil || n != 20 || last != 20 {
		t.Fatalf("Verify after concurrent appends = %d..%d, %v", n, last, err)
	}
}

// recordN appends n entries and returns the head after them.
func recordN(t *testing.T, l *audit.Log, n int) audit.Head {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := l.Record(ctx, audit.KeysUploaded, "acct", 1, map[string]string{"i": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := l.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testAuditTruncation: a log cut at the end is still a valid chain, so
// Verify passes, but VerifyAgainst a checkpoint's head fails: entries cut,
// every entry cut, and a cut followed by new appends.
func testAuditTruncation(t *testing.T, db *store.DB) {
	ctx := context.Background()
	l := auditLog(t, db)
	if h, err := l.Head(ctx); err != nil || h.String() != "0:" {
		t.Fatalf("empty head = %v, %v", h, err)
	}
	early := recordN(t, l, 3)
	head := recordN(t, l, 2)
	if head.Seq != 5 || len(head.MAC) != 32 {
		t.Fatalf("head = %v", head)
	}
	if p, err := audit.ParseHead(head.String()); err != nil || p.Seq != head.Seq || !bytes.Equal(p.MAC, head.MAC) {
		t.Fatalf("ParseHead(%s) = %v, %v", head, p, err)
	}
	for _, h := range []audit.Head{head, early, {}} {
		if _, _, _, err := l.VerifyAgainst(ctx, h); err != nil {
			t.Fatalf("intact log against %s: %v", h, err)
		}
	}
	expectCut := func(what string, h audit.Head) {
		t.Helper()
		if _, _, _, err := l.VerifyAgainst(ctx, h); !errors.Is(err, audit.ErrTampered) {
			t.Fatalf("%s: VerifyAgainst(%s) = %v, want ErrTampered", what, h, err)
		}
	}
	if err := db.ExecRaw(ctx, `DELETE FROM audit_log WHERE seq > 3`); err != nil {
		t.Fatal(err)
	}
	if n, _, last, err := l.Verify(ctx); err != nil || n != 3 || last != 3 {
		t.Fatalf("the cut log is a valid chain: Verify = %d ..%d, %v", n, last, err)
	}
	expectCut("last two entries deleted", head)
	if _, _, _, err := l.VerifyAgainst(ctx, early); err != nil {
		t.Fatalf("an earlier checkpoint still holds: %v", err)
	}
	// New entries after the cut take the deleted numbers with other MACs.
	recordN(t, l, 3)
	expectCut("cut and appended again", head)
	if err := db.ExecRaw(ctx, `DELETE FROM audit_log`); err != nil {
		t.Fatal(err)
	}
	if n, _, _, err := l.Verify(ctx); err != nil || n != 0 {
		t.Fatalf("an empty log is a valid chain: Verify = %d, %v", n, err)
	}
	expectCut("every entry deleted", head)
	expectCut("every entry deleted (earlier checkpoint)", early)
}

// testAuditWrongKey: a verifier with another key is told the key is wrong,
// not that the log was altered (with entries, and with none); the relay
// refuses to append under it; a replaced key check value is tampering.
func testAuditWrongKey(t *testing.T, db *store.DB) {
	ctx := context.Background()
	l := auditLog(t, db)
	other, err := audit.New(db, bytes.Repeat([]byte{8}, 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, l, 3)
	if _, _, _, err := other.Verify(ctx); !errors.Is(err, audit.ErrWrongKey) || errors.Is(err, audit.ErrTampered) {
		t.Fatalf("Verify with another key = %v, want ErrWrongKey", err)
	}
	if err := other.Record(ctx, audit.KeysUploaded, "acct", 1, nil); !errors.Is(err, audit.ErrWrongKey) {
		t.Fatalf("Record with another key = %v, want ErrWrongKey", err)
	}
	if err := other.CheckKey(ctx); !errors.Is(err, audit.ErrWrongKey) {
		t.Fatalf("CheckKey with another key = %v", err)
	}
	if n, _, _, err := l.Verify(ctx); err != nil || n != 3 {
		t.Fatalf("the right key after the refused append: %d, %v", n, err)
	}
	// Tampering under the right key is still tampering.
	dropGuard := map[string]string{
		"sqlite":   `DROP TRIGGER audit_log_append_only`,
		"postgres": `DROP TRIGGER audit_log_append_only ON audit_log`,
	}[db.Dialect()]
	if err := db.ExecRaw(ctx, dropGuard); err != nil {
		t.Fatal(err)
	}
	if err := db.ExecRaw(ctx, `UPDATE audit_log SET device_id = 9 WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := l.Verify(ctx); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("edited entry: %v", err)
	}
	if _, _, _, err := other.Verify(ctx); !errors.Is(err, audit.ErrWrongKey) {
		t.Fatalf("edited entry, another key: %v", err)
	}
	db.ExecRaw(ctx, `UPDATE audit_log SET device_id = 1 WHERE seq = 2`)
	// A replaced key check value, while the entries verify, is tampering.
	if err := db.ExecRaw(ctx, `UPDATE audit_key_check SET key_check = $1`, bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := l.Verify(ctx); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("replaced key check value: %v", err)
	}
	// An emptied log keeps its key check value: the wrong key is still told.
	if err := db.ExecRaw(ctx, `DELETE FROM audit_log`); err != nil {
		t.Fatal(err)
	}
	if err := db.ExecRaw(ctx, `DELETE FROM audit_key_check`); err != nil {
		t.Fatal(err)
	}
	if err := auditLog(t, db).CheckKey(ctx); err != nil { // a relay starting on the empty log
		t.Fatal(err)
	}
	if _, _, _, err := other.Verify(ctx); !errors.Is(err, audit.ErrWrongKey) {
		t.Fatalf("empty log, another key: %v", err)
	}
}
