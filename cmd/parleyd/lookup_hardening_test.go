package main

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"github.com/parleyhq/parley/protocol"
)

// manyNumbers are test numbers +15555550100 … +1555555010(n-1), code 123456.
func manyNumbers(n int) string {
	var nums []string
	for i := range n {
		nums = append(nums, fmt.Sprintf("+155555501%02d=123456", i))
	}
	return "PARLEY_TEST_NUMBERS=" + strings.Join(nums, ",")
}

// Issue 14, row 9, against a real parleyd with its default limits: accounts
// that fetch a target's bundle over and over use up the target's budget of
// one-time prekeys and then their own share of it (429), but a friend who
// fetches afterwards still gets a usable bundle (signed and last-resort
// keys), never a refusal, and half of the target's pool is still there.
func TestBundleDrainCannotStarveRealRelay(t *testing.T) {
	p := start(t, []string{manyNumbers(7)}, "--data-dir", t.TempDir())
	victimUser, victimPass := registerFlow(t, p, "+15555550100", "123456")
	victim := strings.TrimSuffix(victimUser, ".1")
	var pre []any
	for i := range 100 {
		k, _ := protocol.GenerateKeyPair(rand.Reader)
		pre = append(pre, map[string]any{"key_id": 100 + i, "public_key": b64(k.Public.Bytes())})
	}
	if st, body := p.do("PUT", "/v1/keys", victimUser, victimPass, map[string]any{"prekeys": pre}); st != 204 && st != 200 {
		t.Fatalf("upload prekeys: %d %v", st, body)
	}
	type account struct{ user, pass string }
	var attackers []account
	for i := 1; i <= 5; i++ {
		u, pw := registerFlow(t, p, fmt.Sprintf("+155555501%02d", i), "123456")
		attackers = append(attackers, account{u, pw})
	}
	friendUser, friendPass := registerFlow(t, p, "+15555550106", "123456")

	claimed, refused := 0, 0
	for _, a := range attackers {
		for range 11 { // one more than an attacker's share of one target
			st, body := p.do("GET", "/v1/keys/"+victim+"/*", a.user, a.pass, nil)
			switch st {
			case 200:
				if body["devices"].([]any)[0].(map[string]any)["prekey"] != nil {
					claimed++
				}
			case 429:
				refused++
			default:
				t.Fatalf("attacker fetch: %d %v", st, body)
			}
		}
	}
	if refused < 5 {
		t.Errorf("each attacker past its share of the target should be refused: %d refusals", refused)
	}
	for i := range 3 {
		st, body := p.do("GET", "/v1/keys/"+victim+"/*", friendUser, friendPass, nil)
		if st != 200 {
			t.Fatalf("friend's fetch %d after the drain: %d %v (the friend was starved)", i+1, st, body)
		}
		d := body["devices"].([]any)[0].(map[string]any)
		if d["signed_prekey"] == nil || d["pq_prekey"] == nil {
			t.Errorf("friend's bundle lacks the keys a session needs: %v", d)
		}
	}
	st, c := p.do("GET", "/v1/keys/count", victimUser, victimPass, nil)
	if st != 200 || c["ec"].(float64) < 40 {
		t.Errorf("the attackers emptied the victim's pool: %d %v (%d claimed)", st, c, claimed)
	}
	t.Logf("attackers claimed %d one-time keys and were refused %d times; %v left", claimed, refused, c["ec"])
}

// Issue 14, row 12, against a real parleyd with its default limits: an
// account's directory budget (100 lookups) is kept per number, so deleting
// the account and registering the number again does not buy a fresh burst.
func TestDirectoryBudgetSurvivesReregistrationRealRelay(t *testing.T) {
	p := start(t, []string{manyNumbers(2)}, "--data-dir", t.TempDir())
	user, pass := registerFlow(t, p, "+15555550100", "123456")
	registerFlow(t, p, "+15555550101", "123456")
	lookups := 0
	for ; lookups < 500; lookups++ {
		st, body := p.do("POST", "/v1/directory", user, pass, map[string]any{"number": "+15555550101"})
		if st == 429 {
			break
		}
		if st != 200 {
			t.Fatalf("lookup %d: %d %v", lookups+1, st, body)
		}
	}
	if lookups < 100 || lookups >= 500 {
		t.Fatalf("%d lookups before the first refusal, want the burst of 100", lookups)
	}
	if st, body := p.do("DELETE", "/v1/accounts/me", user, pass, nil); st != 204 {
		t.Fatalf("delete account: %d %v", st, body)
	}
	user, pass = registerFlow(t, p, "+15555550100", "123456")
	if st, body := p.do("POST", "/v1/directory", user, pass, map[string]any{"number": "+15555550101"}); st != 429 {
		t.Errorf("lookup after deleting and re-registering the number: %d %v, want 429", st, body)
	}
}
