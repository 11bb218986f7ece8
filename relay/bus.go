package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/google/uuid"
)

// EventKind says what an Event asks of the nodes that receive it.
type EventKind byte

// Event kinds.
const (
	// EventWake: the device has new envelopes in its queue.
	EventWake EventKind = 'w'
	// EventDisconnect: close the device's connections (every device of
	// the account when Device is 0) opened at or before At.
	EventDisconnect EventKind = 'd'
	// EventConnected: the device connected to another node at At; close
	// older connections here (one live connection per device).
	EventConnected EventKind = 'c'
	// EventOnline: deliver Envelope to the device if it is connected.
	EventOnline EventKind = 'o'
	// EventResync: events may have been lost; recheck every queue.
	EventResync EventKind = 'r'
	// EventProvision: the provisioning mailbox whose key is in Account has
	// a message (Device is 0); the node holding its socket sends it.
	EventProvision EventKind = 'p'
)

// Event is a message between relay nodes.
type Event struct {
	Kind     EventKind
	Account  uuid.UUID
	Device   int
	At       int64     // Unix ms, for EventDisconnect and EventConnected
	Envelope *Envelope // for EventOnline
}

// Bus carries Events to the other relay nodes sharing the database.
type Bus interface {
	// Publish queues ev for the other nodes and returns at once. Busy
	// buses coalesce events; a bus that must drop events publishes an
	// EventResync instead, so nothing stays stuck.
	Publish(ev Event)
	// Run delivers other nodes' events to deliver until ctx ends. It calls
	// resync whenever events may have been missed (e.g. after reconnecting
	// to the database).
	Run(ctx context.Context, deliver func([]Event), resync func()) error
}

// LocalBus is the Bus of a relay that runs as a single node: every
// connection is local, so there is nobody to tell.
type LocalBus struct{}

// Publish does nothing: the relay has already acted on ev locally.
func (LocalBus) Publish(Event) {}

// Run waits for ctx to end.
func (LocalBus) Run(ctx context.Context, _ func([]Event), _ func()) error {
	<-ctx.Done()
	return nil
}

// MaxEventLine is the longest encoded event: an online envelope of
// MaxOnlineContentBytes in base64 plus its header.
const MaxEventLine = 8000

// onlineWire is an online envelope inside an encoded event.
type onlineWire struct {
	ID              uuid.UUID `json:"i"`
	Type            int       `json:"t"`
	SourceAccount   uuid.UUID `json:"a"`
	SourceDevice    int       `json:"d"`
	ClientTimestamp int64     `json:"c"`
	ServerTimestamp int64     `json:"s"`
	Urgent          bool      `json:"u"`
	Content         []byte    `json:"x"`
}

// Encode returns ev as one line of text ("w <account> <device>"), the form
// in which buses carry events.
func (ev Event) Encode() string {
	var b strings.Builder
	b.WriteByte(byte(ev.Kind))
	if ev.Kind == EventResync {
		return b.String()
	}
	b.WriteByte(' ')
	b.WriteString(ev.Account.String())
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(ev.Device))
	switch ev.Kind {
	case EventDisconnect, EventConnected:
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(ev.At, 10))
	case EventOnline:
		e := ev.Envelope
		w, _ := json.Marshal(onlineWire{e.ID, e.Type, e.SourceAccount, e.SourceDevice, e.ClientTimestamp, e.ServerTimestamp.UnixMilli(), e.Urgent, e.Content})
		b.WriteByte(' ')
		b.WriteString(base64.RawStdEncoding.EncodeToString(w))
	}
	return b.String()
}

// ErrBadEvent reports an event line that does not parse.
var ErrBadEvent = errors.New("malformed relay event")

// ParseEvent parses a line made by Event.Encode.
func ParseEvent(line string) (Event, error) {
	bad := func(why string) (Event, error) { return Event{}, fmt.Errorf("%w: %s", ErrBadEvent, why) }
	if len(line) > MaxEventLine {
		return bad("too long")
	}
	f := strings.Split(line, " ")
	if len(f[0]) != 1 {
		return bad("no kind")
	}
	ev := Event{Kind: EventKind(f[0][0])}
	var want int // fields per kind
	switch ev.Kind {
	case EventResync:
		want = 1
	case EventWake, EventProvision:
		want = 3
	case EventDisconnect, EventConnected, EventOnline:
		want = 4
	default:
		return bad("unknown kind")
	}
	if len(f) != want {
		return bad("wrong number of fields")
	}
	if ev.Kind == EventResync {
		return ev, nil
	}
	var err error
	if ev.Account, err = uuid.Parse(f[1]); err != nil || len(f[1]) != 36 {
		return bad("account")
	}
	if ev.Device, err = strconv.Atoi(f[2]); err != nil || ev.Device < 0 || ev.Device > MaxDevicesPerAccount {
		return bad("device")
	}
	switch ev.Kind {
	case EventDisconnect, EventConnected:
		if ev.At, err = strconv.ParseInt(f[3], 10, 64); err != nil || ev.At < 0 {
			return bad("time")
		}
	case EventOnline:
		raw, err := base64.RawStdEncoding.DecodeString(f[3])
		if err != nil {
			return bad("envelope encoding")
		}
		var w onlineWire
		if err := json.Unmarshal(raw, &w, json.RejectUnknownMembers(true)); err != nil {
			return bad("envelope")
		}
		if ev.Device < 1 || len(w.Content) == 0 || len(w.Content) > MaxOnlineContentBytes {
			return bad("envelope content")
		}
		ev.Envelope = &Envelope{
			ID: w.ID, Type: w.Type, SourceAccount: w.SourceAccount, SourceDevice: w.SourceDevice, DestDevice: ev.Device,
			ClientTimestamp: w.ClientTimestamp, ServerTimestamp: timeMS(w.ServerTimestamp), Urgent: w.Urgent, Online: true, Content: w.Content,
		}
	}
	return ev, nil
}
