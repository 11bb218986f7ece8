package signalcli

import (
	"encoding/json"
	"testing"

	"github.com/parleyhq/parley/cli"
)

// render returns r as generic JSON, as a bot reads it.
func render(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Events that the end-to-end test with signal-sdk does not produce (they
// need a linked device or a broken envelope) keep signal-cli's shapes.
func TestShapesOfRareEvents(t *testing.T) {
	sent := render(t, Receive("+12025550100", cli.Event{Kind: "sent", SenderAccount: "me", Sender: "+12025550100", SenderDevice: 2,
		Timestamp: 9, Text: "copy", Destination: "+12025550101", DestinationAccount: "them", ExpireTimer: 60}))
	sm := sent["envelope"].(map[string]any)["syncMessage"].(map[string]any)["sentMessage"].(map[string]any)
	if sm["destinationNumber"] != "+12025550101" || sm["destination"] != "+12025550101" || sm["destinationUuid"] != "them" ||
		sm["message"] != "copy" || sm["timestamp"] != 9.0 || sm["expiresInSeconds"] != 60.0 {
		t.Errorf("sent copy: %v", sm)
	}
	timer := render(t, Receive("+12025550100", cli.Event{Kind: "timer", SenderAccount: "them", Timestamp: 3, ExpireTimer: 300}))
	dm := timer["envelope"].(map[string]any)["dataMessage"].(map[string]any)
	if dm["isExpirationUpdate"] != true || dm["expiresInSeconds"] != 300.0 || dm["message"] != nil {
		t.Errorf("timer: %v", dm)
	}
	broken := render(t, Receive("+12025550100", cli.Event{Kind: "error", SenderAccount: "them", SenderDevice: 1, Error: "bad MAC"}))
	if ex := broken["exception"].(map[string]any); ex["message"] != "bad MAC" || ex["type"] == "" {
		t.Errorf("error: %v", broken)
	}
	if env := broken["envelope"].(map[string]any); env["dataMessage"] != nil || env["sourceUuid"] != "them" || env["sourceNumber"] != nil {
		t.Errorf("error envelope: %v", env)
	}
	upd := render(t, Receive("+12025550100", cli.Event{Kind: "group_update", SenderAccount: "them", Group: "AAECAwQFBgcICQoLDA0ODw", GroupName: "Ops"}))
	if gi := upd["envelope"].(map[string]any)["dataMessage"].(map[string]any)["groupInfo"].(map[string]any); gi["type"] != "UPDATE" ||
		gi["groupId"] != "AAECAwQFBgcICQoLDA0ODw==" {
		t.Errorf("group update: %v", gi)
	}
}

// Group ids are written as signal-cli writes them and read in either form.
func TestGroupIDForms(t *testing.T) {
	const parley = "AAECAwQFBgcICQoLDA0ODw"
	sc := GroupID(parley)
	if sc != "AAECAwQFBgcICQoLDA0ODw==" {
		t.Fatalf("GroupID = %q", sc)
	}
	for _, in := range []string{parley, sc} {
		if got, err := ParseGroupID(in); err != nil || got != parley {
			t.Errorf("ParseGroupID(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseGroupID("not base64!"); err == nil {
		t.Error("ParseGroupID accepted garbage")
	}
}
