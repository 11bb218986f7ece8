package main_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type syncEvent struct {
	Type        string `json:"type"`
	Sender      string `json:"sender"`
	Destination string `json:"destination"`
	Text        string `json:"text"`
}

func (u *user) events() []syncEvent {
	u.t.Helper()
	var evs []syncEvent
	for _, l := range strings.Split(strings.TrimSpace(u.ok("receive", "--json", "--timeout", "0.5")), "\n") {
		var e syncEvent
		if l != "" && json.Unmarshal([]byte(l), &e) == nil && (e.Type == "message" || e.Type == "sent") {
			evs = append(evs, e)
		}
	}
	return evs
}

func has(evs []syncEvent, want syncEvent) bool {
	for _, e := range evs {
		if e == want {
			return true
		}
	}
	return false
}

// TestLinkedDevice: a second device linked with `parley link` /
// `addDevice` receives messages to the account and copies of what its
// sibling sends, and what it sends reaches the other side and its sibling.
func TestLinkedDevice(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "before linking", bob.number)
	bob.receive()

	laptop, uri := linkDevice(t, alice, server)
	var devs []map[string]any
	json.Unmarshal([]byte(laptop.ok("listDevices", "--json")), &devs)
	if len(devs) != 2 {
		t.Fatalf("devices: %v", devs)
	}

	// Incoming: Bob's message reaches both of Alice's devices.
	bob.ok("send", "-m", "hi both", alice.number)
	for _, d := range []*user{alice, laptop} {
		if evs := d.events(); !has(evs, syncEvent{Type: "message", Sender: bob.number, Text: "hi both"}) {
			t.Errorf("%s's device did not get bob's message: %+v", d.config, evs)
		}
	}
	// Sent from the primary: Bob gets it, the laptop gets a copy.
	alice.ok("send", "-m", "from the phone", bob.number)
	if evs := laptop.events(); !has(evs, syncEvent{Type: "sent", Sender: alice.number, Destination: bob.number, Text: "from the phone"}) {
		t.Errorf("the laptop did not get its sibling's sent message: %+v", evs)
	}
	// Our own account is not a contact: neither device lists it among the
	// identities (it used to appear as a bare account id with no safety
	// number).
	for _, u := range []*user{alice, laptop} {
		out := u.ok("listIdentities")
		if strings.Contains(out, alice.number+":") || !strings.Contains(out, bob.number+":") {
			t.Errorf("%s's listIdentities:\n%s", u.config, out)
		}
		var ids []struct{ Number, Account string }
		json.Unmarshal([]byte(u.ok("listIdentities", "--json")), &ids)
		for _, id := range ids {
			if id.Number == "" {
				t.Errorf("an identity without a number (our own account?): %+v", id)
			}
		}
	}
	// Sent from the laptop: Bob gets it from Alice, the phone gets a copy.
	laptop.ok("send", "-m", "from the laptop", bob.number)
	if evs := bob.events(); !has(evs, syncEvent{Type: "message", Sender: alice.number, Text: "from the phone"}) ||
		!has(evs, syncEvent{Type: "message", Sender: alice.number, Text: "from the laptop"}) {
		t.Errorf("bob received %+v", evs)
	}
	if evs := alice.events(); !has(evs, syncEvent{Type: "sent", Sender: alice.number, Destination: bob.number, Text: "from the laptop"}) {
		t.Errorf("the phone did not get the laptop's sent message: %+v", evs)
	}
	// Both devices' histories hold the whole conversation.
	for _, d := range []*user{alice, laptop} {
		h := strings.Join(d.history(bob), "|")
		for _, want := range []string{"hi both", "from the phone", "from the laptop"} {
			if !strings.Contains(h, want) {
				t.Errorf("%s history lacks %q: %s", d.config, want, h)
			}
		}
	}
	if laptop.identity(bob).SafetyNumber != alice.identity(bob).SafetyNumber {
		t.Fatal("the linked device shows another safety number than the primary")
	}
	// Groups too: the laptop learns of a group its phone created, gets the
	// phone's group messages and can write to the group itself.
	m := createdGroup.FindStringSubmatch(alice.ok("updateGroup", "-n", "Family", "-m", bob.number))
	if m == nil {
		t.Fatal("no group created")
	}
	alice.ok("send", "-g", m[1], "-m", "group from the phone")
	if got := groupTexts(laptop.groupEvents()); len(got) != 0 {
		t.Errorf("own group message shown as incoming on the laptop: %q", got)
	}
	if out := laptop.ok("listGroups"); !strings.Contains(out, `"Family"`) {
		t.Errorf("the laptop does not know the group: %s", out)
	}
	laptop.ok("send", "-g", m[1], "-m", "group from the laptop")
	if got := strings.Join(groupTexts(bob.groupEvents()), "|"); got != alice.number+": group from the phone|"+alice.number+": group from the laptop" {
		t.Errorf("bob's group messages: %q", got)
	}
	alice.groupEvents() // the phone receives its sibling's group message
	if h := strings.Join(alice.groupHistory(m[1]), "|"); !strings.Contains(h, "group from the laptop") {
		t.Errorf("the phone's group history lacks the laptop's message: %s", h)
	}
	// A linked device cannot approve further devices.
	if _, errs, code := laptop.run("", "addDevice", "--uri", uri); code != 1 || !strings.Contains(errs, "primary") {
		t.Errorf("linked device's addDevice: exit %d %s", code, errs)
	}
}

// linkDevice links a new device to primary's account with `parley link`
// and `addDevice`, and returns it with the link URI it showed.
func linkDevice(t *testing.T, alice *user, server string) (*user, string) {
	t.Helper()
	laptop := &user{t: t, number: alice.number, config: t.TempDir(), server: server}
	link := laptop.cmd("link")
	stdout, err := link.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	link.Stderr = &stderr
	if err := link.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "parley://link?") {
		t.Fatalf("link printed %q (%s)", lines.Text(), stderr.String())
	}
	uri := lines.Text()
	alice.ok("addDevice", "--uri", uri)
	rest := make(chan string, 1)
	go func() {
		var b strings.Builder
		for lines.Scan() {
			b.WriteString(lines.Text())
		}
		rest <- b.String()
	}()
	var last string
	select {
	case last = <-rest:
	case <-time.After(30 * time.Second):
		link.Process.Kill()
		t.Fatal("link did not finish")
	}
	if err := link.Wait(); err != nil {
		t.Fatalf("link: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(last, "device 2 of "+alice.number) {
		t.Fatalf("link ended with %q", last)
	}
	return laptop, uri
}

// TestLinkedDeviceLearnsTheAccount: a device linked after contacts were
// verified, a timer set and a group made starts with all of them, as the
// primary has them, instead of an empty address book.
func TestLinkedDeviceLearnsTheAccount(t *testing.T) {
	server := relay(t, "sqlite")
	alice, bob := newUser(t, server, 0), newUser(t, server, 1)
	alice.register()
	bob.register()
	alice.ok("send", "-m", "before linking", bob.number)
	bob.receive()
	alice.ok("trust", bob.number, "--verified-safety-number", alice.identity(bob).SafetyNumber)
	alice.ok("updateContact", bob.number, "-e", "60")
	bob.receive()
	m := createdGroup.FindStringSubmatch(alice.ok("updateGroup", "-n", "Night shift", "-m", bob.number))
	if m == nil {
		t.Fatal("no group created")
	}
	bob.groupEvents()

	laptop, _ := linkDevice(t, alice, server)
	if got, want := laptop.identity(bob), alice.identity(bob); got != want || got.TrustLevel != "TRUSTED_VERIFIED" {
		t.Errorf("the laptop's view of bob: %+v, the phone's: %+v", got, want)
	}
	if out := laptop.ok("listGroups"); !strings.Contains(out, `"Night shift"`) || !strings.Contains(out, bob.number) {
		t.Errorf("the laptop does not know the group made before it was linked: %s", out)
	}
	// The laptop writes with the conversation's timer, and to the group.
	laptop.ok("send", "-m", "from the new laptop", bob.number)
	if got := bob.ok("receive", "--json", "--timeout", "0.5"); !strings.Contains(got, "from the new laptop") || !strings.Contains(got, `"expire_timer":60`) {
		t.Errorf("bob received %s", got)
	}
	laptop.ok("send", "-g", m[1], "-m", "group from the new laptop")
	if got := strings.Join(groupTexts(bob.groupEvents()), "|"); got != alice.number+": group from the new laptop" {
		t.Errorf("bob's group messages: %q", got)
	}
}
