package api_test

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/ratelimit"
)

func TestDirectory(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.directory = ratelimit.Rule{Burst: 5, Every: time.Hour} })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)

	r := e.call("POST", "/v1/directory", alice, map[string]any{"number": bobNumber}, true)
	if r.Status != 200 || r.Body["account_id"] != bob.Account {
		t.Fatalf("lookup of a registered number: %d %s", r.Status, r.Raw)
	}
	// Formatting variants of the same number find the same account.
	r = e.call("POST", "/v1/directory", alice, map[string]any{"number": "+44 20 7946 0102"}, true)
	if r.Status != 200 || r.Body["account_id"] != bob.Account {
		t.Errorf("lookup with spaces: %d %s", r.Status, r.Raw)
	}
	if r = e.call("POST", "/v1/directory", alice, map[string]any{"number": carolNumber}, true); r.Status != 404 || r.errCode() != "number_not_registered" {
		t.Errorf("unregistered number: %d %s", r.Status, r.Raw)
	}
	if r = e.call("POST", "/v1/directory", alice, map[string]any{"number": "not a number"}, true); r.Status != 422 || r.errCode() != "invalid_number" {
		t.Errorf("malformed number: %d %s", r.Status, r.Raw)
	}
	// Forbidden paths: no credentials, a wrong secret.
	if r = e.call("POST", "/v1/directory", nil, map[string]any{"number": bobNumber}, true); r.Status != 401 {
		t.Errorf("anonymous lookup: %d %s", r.Status, r.Raw)
	}
	wrong := *alice
	wrong.Secret = alice.Secret[:len(alice.Secret)-2] + "AA"
	if r = e.call("POST", "/v1/directory", &wrong, map[string]any{"number": bobNumber}, true); r.Status != 401 {
		t.Errorf("lookup with a wrong secret: %d %s", r.Status, r.Raw)
	}
	// The budget (5 here) counts every lookup, found or not; the refusal
	// comes before the number is looked at.
	if r = e.call("POST", "/v1/directory", alice, map[string]any{"number": bobNumber}, true); r.Status != 200 {
		t.Fatalf("fifth lookup: %d %s", r.Status, r.Raw)
	}
	r = e.call("POST", "/v1/directory", alice, map[string]any{"number": bobNumber}, true)
	if r.Status != 429 || r.errCode() != "rate_limited" {
		t.Errorf("sixth lookup: want 429, got %d %s", r.Status, r.Raw)
	}
	// Bob's budget is his own.
	if r = e.call("POST", "/v1/directory", bob, map[string]any{"number": aliceNumber}, true); r.Status != 200 || r.Body["account_id"] != alice.Account {
		t.Errorf("bob's lookup: %d %s", r.Status, r.Raw)
	}
}

// TestDirectoryBudgetSurvivesReregistration: the per-requester budget is
// keyed on the requester's number, so deleting the account and registering
// the number again (a new account id) does not refill it.
func TestDirectoryBudgetSurvivesReregistration(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.directory = ratelimit.Rule{Burst: 3, Every: time.Hour} })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	for i := range 3 {
		if r := e.call("POST", "/v1/directory", alice, map[string]any{"number": bobNumber}, true); r.Status != 200 {
			t.Fatalf("lookup %d: %d %s", i+1, r.Status, r.Raw)
		}
	}
	if r := e.call("DELETE", "/v1/accounts/me", alice, nil, true); r.Status != 204 {
		t.Fatalf("delete account: %d %s", r.Status, r.Raw)
	}
	_, again := e.register(aliceNumber, 0)
	if again.Account == alice.Account {
		t.Fatal("re-registration kept the account id")
	}
	if r := e.call("POST", "/v1/directory", again, map[string]any{"number": bobNumber}, true); r.Status != 429 || r.errCode() != "rate_limited" {
		t.Errorf("lookup after re-registering the number: want 429, got %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", "/v1/directory", bob, map[string]any{"number": aliceNumber}, true); r.Status != 200 {
		t.Errorf("another number's budget: %d %s", r.Status, r.Raw)
	}
}

// TestDirectoryAddressBudget: every account behind one client address
// shares the address's budget, so many accounts do not multiply it.
func TestDirectoryAddressBudget(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.directoryAddress = ratelimit.Rule{Burst: 3, Every: time.Hour} })
	_, alice := e.register(aliceNumber, 0)
	_, bob := e.register(bobNumber, 0)
	for i, c := range []*creds{alice, bob, alice} {
		if r := e.call("POST", "/v1/directory", c, map[string]any{"number": carolNumber}, true); r.Status != 404 {
			t.Fatalf("lookup %d: %d %s", i+1, r.Status, r.Raw)
		}
	}
	if r := e.call("POST", "/v1/directory", bob, map[string]any{"number": aliceNumber}, true); r.Status != 429 || r.errCode() != "rate_limited" {
		t.Errorf("fourth lookup from the same address: want 429, got %d %s", r.Status, r.Raw)
	}
}
