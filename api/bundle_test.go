package api_test

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/ratelimit"
)

// TestBundleDrainCannotStarve: accounts that fetch a target's bundles
// over and over use up the target's one-time prekey budget, but a friend
// who fetches afterwards still gets a bundle (signed and last-resort keys,
// no one-time key claimed) instead of 429; and one requester cannot spend
// more than its own share of one target.
func TestBundleDrainCannotStarve(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.bundles.target = ratelimit.Rule{Burst: 4, Every: time.Hour}
		c.bundles.pair = ratelimit.Rule{Burst: 3, Every: time.Hour}
	})
	_, victim := e.register(aliceNumber, 20)
	_, attacker := e.register(bobNumber, 0)
	_, friend := e.register(carolNumber, 0)

	// The attacker's share of the victim: 3 fetches, then 429.
	for i := 1; i <= 3; i++ {
		if r := e.call("GET", "/v1/keys/"+victim.Account+"/*", attacker, nil, true); r.Status != 200 {
			t.Fatalf("attacker fetch %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if r := e.call("GET", "/v1/keys/"+victim.Account+"/*", attacker, nil, true); r.Status != 429 || r.errCode() != "rate_limited" {
		t.Fatalf("attacker's fourth fetch of one target: want 429, got %d %s", r.Status, r.Raw)
	}
	// The friend's first fetch claims the last one-time key of the target's
	// budget (4); after it, fetches are still answered, without one.
	for i := 1; i <= 3; i++ {
		r := e.call("GET", "/v1/keys/"+victim.Account+"/*", friend, nil, true)
		if r.Status != 200 {
			t.Fatalf("friend fetch %d after the drain: %d %s", i, r.Status, r.Raw)
		}
		d := r.Body["devices"].([]any)[0].(map[string]any)
		_, hasPK := d["prekey"]
		if i == 1 && (!hasPK || d["pq_last_resort"] != false) {
			t.Errorf("friend fetch 1: want one-time keys, got %s", r.Raw)
		}
		if i > 1 && (hasPK || d["pq_last_resort"] != true) {
			t.Errorf("friend fetch %d past the target's budget: want the last-resort bundle, got %s", i, r.Raw)
		}
	}
	// The target's pools kept what the budget protected.
	r := e.call("GET", "/v1/keys/count", victim, nil, true)
	if r.Body["ec"] != 16.0 || r.Body["pq"] != 16.0 {
		t.Errorf("victim's pools after the drain: %s (want 16 of 20 left)", r.Raw)
	}
}
