package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/store"
)

var pushTests = []struct {
	name string
	f    func(*testing.T, *store.DB)
}{
	{"PushTargets", testPushTargets},
	{"PushClaimedOnce", testPushClaimedOnce},
}

func webTarget(endpoint string) push.Target {
	p := append([]byte{4}, random(64)...)
	return push.Target{Kind: push.WebPush, Endpoint: endpoint, P256DH: p, Auth: random(16)}
}

func testPushTargets(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	first := webTarget("https://push.example/one")
	if err := db.SetPushTarget(ctx, a, 1, first); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPushTarget(ctx, a, 2, first); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("a device that does not exist: %v", err)
	}
	second := push.Target{Kind: push.FCM, Token: "fcm-registration-token-0123456789"}
	if err := db.SetPushTarget(ctx, a, 1, second); err != nil {
		t.Fatal(err)
	}
	got, err := db.PushTarget(ctx, a, 1)
	if err != nil || got.Kind != push.FCM || got.Token != second.Token {
		t.Fatalf("after replacing: %+v %v", got, err)
	}
	// A gone report for the old target does not delete the new one.
	if err := db.DeletePushTarget(ctx, a, 1, first); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PushTarget(ctx, a, 1); err != nil {
		t.Fatalf("the new target went with the old one's gone report: %v", err)
	}
	if err := db.DeletePushTarget(ctx, a, 1, second); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PushTarget(ctx, a, 1); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("after its gone report: %v", err)
	}
	// Removed with the device.
	d := addDevice(t, db, a, 9)
	if err := db.SetPushTarget(ctx, a, d, first); err != nil {
		t.Fatal(err)
	}
	if err := db.RemoveDevice(ctx, a, d); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PushTarget(ctx, a, d); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("a removed device's target: %v", err)
	}
	// A push is needed only with a target and undelivered envelopes.
	b, _ := register(t, db, 0)
	if _, err := db.Enqueue(ctx, batch(a, b, 1), accept); err != nil {
		t.Fatal(err)
	}
	if p, err := db.NeedsPush(ctx, b, 1, now); err != nil || p {
		t.Fatalf("no target, needs push: %v %v", p, err)
	}
	if err := db.SetPushTarget(ctx, b, 1, first); err != nil {
		t.Fatal(err)
	}
	if p, err := db.NeedsPush(ctx, b, 1, now); err != nil || !p {
		t.Fatalf("a target and a queued envelope, no push needed: %v %v", p, err)
	}
	if p, err := db.NeedsPush(ctx, b, 1, now.Add(2*time.Hour)); err != nil || p {
		t.Fatalf("expired envelope needs push: %v %v", p, err)
	}
	// Registering again keeps the device's push history (no earlier push
	// for re-registering).
	if _, ok, _ := db.ClaimPush(ctx, b, 1, now, time.Minute); !ok {
		t.Fatal("first claim")
	}
	if err := db.SetPushTarget(ctx, b, 1, first); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.ClaimPush(ctx, b, 1, now.Add(time.Second), time.Minute); ok {
		t.Error("registering again reset the interval")
	}
}

// Of many claims at once (replicas), one wins; the next wins only after
// the interval, and a back-off holds claims off until it ends.
func testPushClaimedOnce(t *testing.T, db *store.DB) {
	ctx := context.Background()
	a, _ := register(t, db, 0)
	if _, ok, err := db.ClaimPush(ctx, a, 1, now, time.Minute); err != nil || ok {
		t.Fatalf("a device without a target was claimed: %v %v", ok, err)
	}
	if err := db.SetPushTarget(ctx, a, 1, webTarget("https://push.example/x")); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, err := db.ClaimPush(ctx, a, 1, now, time.Minute); err == nil && ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent claims won, want 1", wins.Load())
	}
	if _, ok, _ := db.ClaimPush(ctx, a, 1, now.Add(30*time.Second), time.Minute); ok {
		t.Error("claimed again within the interval")
	}
	tgt, ok, err := db.ClaimPush(ctx, a, 1, now.Add(61*time.Second), time.Minute)
	if err != nil || !ok || tgt.Endpoint != "https://push.example/x" {
		t.Fatalf("after the interval: %+v %v %v", tgt, ok, err)
	}
	if err := db.BackOffPush(ctx, a, 1, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.ClaimPush(ctx, a, 1, now.Add(30*time.Minute), time.Minute); ok {
		t.Error("claimed while backed off")
	}
	if _, ok, _ := db.ClaimPush(ctx, a, 1, now.Add(61*time.Minute), time.Minute); !ok {
		t.Error("not claimed after the back-off")
	}
}
