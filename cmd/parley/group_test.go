package main_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

type groupEvent struct {
	Type      string   `json:"type"`
	Sender    string   `json:"sender"`
	Text      string   `json:"text"`
	Group     string   `json:"group"`
	GroupName string   `json:"group_name"`
	Members   []string `json:"members"`
	Removed   bool     `json:"removed"`
}

func (u *user) groupEvents() []groupEvent {
	u.t.Helper()
	var evs []groupEvent
	for _, l := range strings.Split(strings.TrimSpace(u.ok("receive", "--json", "--timeout", "0.5")), "\n") {
		var e groupEvent
		if l != "" && json.Unmarshal([]byte(l), &e) == nil && (e.Type == "message" || e.Type == "group_update") {
			evs = append(evs, e)
		}
	}
	return evs
}

func groupTexts(evs []groupEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "message" && e.Group != "" {
			out = append(out, e.Sender+": "+e.Text)
		}
	}
	return out
}

var createdGroup = regexp.MustCompile(`Created group ([A-Za-z0-9_-]{22})`)

// TestGroupConversation: three members talk in a client-side group (sender
// keys, one multi-recipient send per message); after Carol is removed she
// gets no later messages and cannot send, while the others go on.
func TestGroupConversation(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob, carol := newUser(t, server, 0), newUser(t, server, 1), newUser(t, server, 2)
	for _, u := range []*user{alice, bob, carol} {
		u.register()
	}
	m := createdGroup.FindStringSubmatch(alice.ok("updateGroup", "-n", "Ward 7", "-m", bob.number, "-m", carol.number))
	if m == nil {
		t.Fatal("updateGroup printed no group id")
	}
	id := m[1]
	for _, u := range []*user{bob, carol} {
		evs := u.groupEvents()
		if len(evs) != 1 || evs[0].Type != "group_update" || evs[0].Group != id || evs[0].GroupName != "Ward 7" || len(evs[0].Members) != 3 {
			t.Fatalf("%s: %+v", u.number, evs)
		}
	}
	alice.ok("send", "-g", id, "-m", "hello ward")
	bob.ok("send", "-g", id, "-m", "hi from bob")
	if got := strings.Join(groupTexts(carol.groupEvents()), "|"); got != alice.number+": hello ward|"+bob.number+": hi from bob" {
		t.Fatalf("carol got %q", got)
	}
	if got := strings.Join(groupTexts(bob.groupEvents()), "|"); got != alice.number+": hello ward" {
		t.Fatalf("bob got %q", got)
	}
	if got := strings.Join(groupTexts(alice.groupEvents()), "|"); got != bob.number+": hi from bob" {
		t.Fatalf("alice got %q", got)
	}

	alice.ok("updateGroup", "-g", id, "-r", carol.number)
	evs := carol.groupEvents()
	if len(evs) != 1 || evs[0].Type != "group_update" || !evs[0].Removed {
		t.Fatalf("carol's removal: %+v", evs)
	}
	if evs := bob.groupEvents(); len(evs) != 1 || len(evs[0].Members) != 2 || evs[0].Removed {
		t.Fatalf("bob's view of the removal: %+v", evs)
	}
	alice.ok("send", "-g", id, "-m", "without carol")
	bob.ok("send", "-g", id, "-m", "still here")
	if got := groupTexts(carol.groupEvents()); len(got) != 0 {
		t.Fatalf("the removed member received %q", got)
	}
	if got := strings.Join(groupTexts(bob.groupEvents()), "|"); got != alice.number+": without carol" {
		t.Fatalf("bob got %q", got)
	}
	if got := strings.Join(groupTexts(alice.groupEvents()), "|"); got != bob.number+": still here" {
		t.Fatalf("alice got %q", got)
	}
	if _, errs, code := carol.run("", "send", "-g", id, "-m", "let me back"); code != 1 || !strings.Contains(errs, "no longer a member") {
		t.Fatalf("removed member's send: exit %d %s", code, errs)
	}
	var groups []map[string]any
	json.Unmarshal([]byte(carol.ok("listGroups", "--json")), &groups)
	if len(groups) != 1 || groups[0]["active"] != false {
		t.Fatalf("carol's groups: %v", groups)
	}
}
