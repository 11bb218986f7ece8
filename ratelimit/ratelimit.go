// Package ratelimit enforces per-key request budgets (per client IP, per
// number, per account) and says how long a refused caller must wait.
//
// Limits are kept in memory, so with several relay replicas each enforces its
// own budget; the effective limit is the configured one times the replica count.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rule is a token bucket: Burst requests at once, refilled one per Every.
// A zero Rule allows everything.
type Rule struct {
	Burst int
	Every time.Duration
}

// Limiter applies one Rule independently to each key.
type Limiter struct {
	rule Rule
	now  func() time.Time

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

// New returns a Limiter for rule. now is the clock (nil for time.Now).
func New(rule Rule, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rule: rule, now: now, buckets: make(map[string]*rate.Limiter)}
}

// Allow takes one token from key's bucket. If none is left it takes nothing
// and returns false and how long until a token will be available.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rule.Burst <= 0 || l.rule.Every <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = rate.NewLimiter(rate.Every(l.rule.Every), l.rule.Burst)
		l.buckets[key] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets buckets that have refilled completely, at most once per
// refill period, so memory stays proportional to recently active keys.
func (l *Limiter) sweep(now time.Time) {
	full := l.rule.Every * time.Duration(l.rule.Burst)
	if now.Sub(l.lastSweep) < full {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.rule.Burst) {
			delete(l.buckets, k)
		}
	}
}

// Len returns how many keys are being tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Error reports a request refused by a Limiter; HTTP handlers answer it with
// 429 and a Retry-After header.
type Error struct {
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return "rate limited: retry after " + e.RetryAfter.Round(time.Second).String()
}
