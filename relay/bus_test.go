package relay

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestEventRoundTrip(t *testing.T) {
	acct := uuid.New()
	env := &Envelope{ID: uuid.New(), Type: 7, SourceAccount: uuid.New(), SourceDevice: 3, DestDevice: 2,
		ClientTimestamp: 11, ServerTimestamp: time.UnixMilli(22), Urgent: true, Online: true, Content: []byte("typing")}
	for _, ev := range []Event{
		{Kind: EventWake, Account: acct, Device: 1},
		{Kind: EventDisconnect, Account: acct, At: 99},
		{Kind: EventConnected, Account: acct, Device: 127, At: 1},
		{Kind: EventOnline, Account: acct, Device: 2, Envelope: env},
		{Kind: EventResync},
		{Kind: EventProvision, Account: acct},
	} {
		got, err := ParseEvent(ev.Encode())
		if err != nil {
			t.Fatalf("%q: %v", ev.Encode(), err)
		}
		if got.Kind != ev.Kind || got.Account != ev.Account || got.Device != ev.Device || got.At != ev.At {
			t.Errorf("round trip of %+v = %+v", ev, got)
		}
		if ev.Envelope != nil {
			g := got.Envelope
			if g == nil || g.ID != env.ID || g.Type != 7 || g.SourceAccount != env.SourceAccount || g.SourceDevice != 3 ||
				g.DestDevice != 2 || g.ClientTimestamp != 11 || !g.ServerTimestamp.Equal(env.ServerTimestamp) || !g.Urgent || !g.Online ||
				!bytes.Equal(g.Content, env.Content) {
				t.Errorf("envelope round trip = %+v", g)
			}
		}
	}
	for _, bad := range []string{"", "w", "x 1 2", "w " + acct.String(), "w " + acct.String() + " 128", "w " + acct.String() + " -1",
		"d " + acct.String() + " 1 -5", "o " + acct.String() + " 1 !!!", "o " + acct.String() + " 0 e30", "r extra",
		"w {" + acct.String()[1:] + "} 1", "w " + acct.String() + " 1 extra"} {
		if _, err := ParseEvent(bad); err == nil {
			t.Errorf("ParseEvent(%q) accepted", bad)
		}
	}
}

// FuzzParseEvent: no line makes the parser panic, and what it accepts
// encodes back to an event that parses the same.
func FuzzParseEvent(f *testing.F) {
	f.Add("w 2f1c1f8e-7a52-4a8e-9a8b-1d2e3f405162 1")
	f.Add("d 2f1c1f8e-7a52-4a8e-9a8b-1d2e3f405162 0 1700000000000")
	f.Add(Event{Kind: EventOnline, Account: uuid.New(), Device: 1, Envelope: &Envelope{Content: []byte("x")}}.Encode())
	f.Add("r")
	f.Fuzz(func(t *testing.T, line string) {
		ev, err := ParseEvent(line)
		if err != nil {
			return
		}
		again, err := ParseEvent(ev.Encode())
		if err != nil || again.Kind != ev.Kind || again.Account != ev.Account || again.Device != ev.Device || again.At != ev.At {
			t.Fatalf("%q parsed to %+v, which re-encodes to %q: %+v, %v", line, ev, ev.Encode(), again, err)
		}
	})
}
