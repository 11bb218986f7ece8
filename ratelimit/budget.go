package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Budget is a token bucket per key that callers draw from in amounts
// (bytes stored, envelopes stored) rather than one request at a time, and
// that takes refunds for work that turned out not to be done. Rule.Burst is
// the bucket's size in units and Rule.Every the time to refill one unit. A
// zero Rule allows everything.
type Budget struct {
	rule Rule
	now  func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewBudget returns a Budget for rule. now is the clock (nil for time.Now).
func NewBudget(rule Rule, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	return &Budget{rule: rule, now: now, buckets: make(map[string]*bucket)}
}

func (b *Budget) unlimited() bool { return b == nil || b.rule.Burst <= 0 || b.rule.Every <= 0 }

// Burst is the most a key may take at once (0: no limit).
func (b *Budget) Burst() int64 {
	if b.unlimited() {
		return 0
	}
	return int64(b.rule.Burst)
}

// fill brings key's bucket up to now; b.mu is held.
func (b *Budget) fill(key string, now time.Time) *bucket {
	k := b.buckets[key]
	if k == nil {
		k = &bucket{tokens: float64(b.rule.Burst), last: now}
		b.buckets[key] = k
	}
	if now.After(k.last) {
		k.tokens = math.Min(float64(b.rule.Burst), k.tokens+float64(now.Sub(k.last))/float64(b.rule.Every))
		k.last = now
	}
	return k
}

// Take draws n units from key's bucket. If they are not all there it takes
// nothing and returns false and how long until they will be; n above the
// burst is never allowed (false, 0), so callers compare with Burst first.
func (b *Budget) Take(key string, n int64) (ok bool, retryAfter time.Duration) {
	if b.unlimited() || n <= 0 {
		return true, 0
	}
	if n > int64(b.rule.Burst) {
		return false, 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	k := b.fill(key, now)
	if missing := float64(n) - k.tokens; missing > 0 {
		return false, time.Duration(math.Ceil(missing * float64(b.rule.Every)))
	}
	k.tokens -= float64(n)
	return true, 0
}

// Refund gives n units back to key's bucket (never above the burst).
func (b *Budget) Refund(key string, n int64) {
	if b.unlimited() || n <= 0 {
		return
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.fill(key, now)
	k.tokens = math.Min(float64(b.rule.Burst), k.tokens+float64(n))
}

// sweep forgets buckets that have refilled completely, at most once per
// refill period, so memory stays proportional to recently active keys.
func (b *Budget) sweep(now time.Time) {
	full := b.rule.Every * time.Duration(b.rule.Burst)
	if now.Sub(b.lastSweep) < full {
		return
	}
	b.lastSweep = now
	for key := range b.buckets {
		if b.fill(key, now).tokens >= float64(b.rule.Burst) {
			delete(b.buckets, key)
		}
	}
}

// Len returns how many keys are being tracked.
func (b *Budget) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buckets)
}
