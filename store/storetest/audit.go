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
}

func auditLog(t *testing.T, db *store.DB) *audit.Log {
	t.Helper()
	l, err := audit.New(db, bytes.Repeat([]byte{7}, 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
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
