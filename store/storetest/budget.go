package storetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/verify"
)

var budgetTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"SendBudgetsAreAtomic", testSendBudget},
}

// testSendBudget: concurrent takers never exceed a budget; a spent budget
// takes nothing from the others (all or none); a new hour starts afresh;
// old hours are swept.
func testSendBudget(t *testing.T, db *store.DB) {
	ctx := context.Background()
	hour := now.Unix() / 3600
	budgets := []verify.Budget{{Scope: "country:44", Limit: 7}, {Scope: "global", Limit: 10}}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spent, err := db.TakeSendBudget(ctx, hour, budgets)
			if err != nil {
				t.Error(err)
			}
			if spent == "" {
				ok.Add(1)
			} else if spent != "country:44" {
				t.Errorf("spent %q, want country:44", spent)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 7 {
		t.Fatalf("%d takes succeeded, want 7", ok.Load())
	}
	// The global budget has 3 left: the refused takes above took none.
	other := []verify.Budget{{Scope: "country:49", Limit: 7}, {Scope: "global", Limit: 10}}
	for i := range 4 {
		spent, err := db.TakeSendBudget(ctx, hour, other)
		want := ""
		if i == 3 {
			want = "global"
		}
		if err != nil || spent != want {
			t.Fatalf("take %d for 49: %q, %v; want %q", i, spent, err, want)
		}
	}
	if spent, err := db.TakeSendBudget(ctx, hour+1, budgets); err != nil || spent != "" {
		t.Fatalf("next hour: %q, %v", spent, err)
	}
	// Sweeping two hours later deletes the first hour's counts.
	if _, err := db.DeleteExpiredSessions(ctx, now.Add(7200e9)); err != nil {
		t.Fatal(err)
	}
	if spent, err := db.TakeSendBudget(ctx, hour, budgets); err != nil || spent != "" {
		t.Fatalf("after sweep: %q, %v", spent, err)
	}
}
