package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Rule{Burst: 2, Every: time.Minute}, func() time.Time { return now })
	for i := range 2 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d refused within burst", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > time.Minute {
		t.Fatalf("third request: ok=%v wait=%v, want refused with wait in (0,1m]", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	now = now.Add(wait)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after waiting Retry-After")
	}
	now = now.Add(10 * time.Minute)
	l.Allow("c")
	if n := l.Len(); n != 1 {
		t.Errorf("after refill, %d keys tracked, want 1 (idle ones swept)", n)
	}
}

func TestZeroRuleAllows(t *testing.T) {
	var l *Limiter
	if ok, _ := l.Allow("x"); !ok {
		t.Error("nil limiter refused")
	}
	if ok, _ := New(Rule{}, nil).Allow("x"); !ok {
		t.Error("zero rule refused")
	}
}

func TestBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBudget(Rule{Burst: 100, Every: time.Second}, func() time.Time { return now })
	if b.Burst() != 100 {
		t.Fatalf("Burst = %d", b.Burst())
	}
	if ok, _ := b.Take("a", 60); !ok {
		t.Fatal("60 of 100 refused")
	}
	ok, wait := b.Take("a", 60)
	if ok || wait != 20*time.Second {
		t.Fatalf("second 60: ok=%v wait=%v, want refused for 20s", ok, wait)
	}
	now = now.Add(5 * time.Second) // refunds come after the work, not at once
	b.Refund("a", 60)
	if ok, _ := b.Take("a", 100); !ok {
		t.Fatal("refunded tokens did not come back")
	}
	if ok, _ := b.Take("a", 1); ok {
		t.Fatal("a refund overfilled the bucket")
	}
	if ok, wait := b.Take("b", 101); ok || wait != 0 {
		t.Errorf("more than the burst: ok=%v wait=%v, want never allowed", ok, wait)
	}
	now = now.Add(time.Hour)
	b.Take("c", 1)
	if n := b.Len(); n != 1 {
		t.Errorf("after refill, %d keys tracked, want 1 (idle ones swept)", n)
	}
	var zero *Budget
	if ok, _ := zero.Take("x", 1<<40); !ok {
		t.Error("nil budget refused")
	}
	if ok, _ := NewBudget(Rule{}, nil).Take("x", 1<<40); !ok {
		t.Error("zero rule refused")
	}
}
