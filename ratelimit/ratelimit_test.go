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
