package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/relay"
)

// BenchmarkGroupSend100 sends one group message to 100 members (one device
// each) through the real HTTP API on SQLite: as 100 single-recipient sends,
// the way a client without multi-recipient sends would, and as one
// multi-recipient send; with members offline (queues grow) and online
// (queues drained between ops). Each op is one whole group message.
//
//	go test -run='^$' -bench=GroupSend100 -count=5 ./api
func BenchmarkGroupSend100(b *testing.B) {
	const members = 100
	numbers := make([]string, members)
	for i := range numbers {
		numbers[i] = fmt.Sprintf("+4420794610%02d", i)
	}
	e := newEnv(b, func(c *envConfig) {
		for _, n := range numbers {
			c.verify.TestNumbers[n] = testCode
		}
		c.relay.SendRate, c.relay.SendBurst = 1e9, 1e9
		c.relay.QueueMaxEnvelopes, c.relay.QueueMaxBytes = 1e9, 1<<40
		c.relay.QueueSenderMaxEnvelopes, c.relay.StoreBytesBurst, c.relay.StoreEnvelopesBurst = 0, 0, 0
	})
	_, sender := e.register(aliceNumber, 0)
	group := make([]*creds, members)
	for i, n := range numbers {
		_, group[i] = e.register(n, 0)
	}
	content := make([]byte, 1024) // a short text plus sender-key overhead, padded
	recipients := make([]map[string]any, members)
	for i, m := range group {
		recipients[i] = to(m, [2]int{1, 1234})
	}
	body := map[string]any{"timestamp": time.Now().UnixMilli(), "type": 4, "content": b64(content), "recipients": recipients}
	perRecipient := func(b *testing.B) {
		for _, m := range group {
			if r := e.send(sender, m.Account, nil, "", msg{Device: 1, RegID: 1234, Type: 4, Content: content}); r.Status != 200 {
				b.Fatalf("send: %d %s", r.Status, r.Raw)
			}
		}
	}
	multi := func(b *testing.B) {
		if r := e.call("PUT", "/v1/messages", sender, body, false); r.Status != 200 {
			b.Fatalf("multi send: %d %s", r.Status, r.Raw)
		}
	}
	// Members offline: queues grow by one message per op.
	for name, send := range map[string]func(*testing.B){"offline/per-recipient": perRecipient, "offline/multi": multi} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				send(b)
			}
			drainAll(b, e)
		})
	}
	// Members online: their devices take and acknowledge every message, so
	// queues stay empty (the acknowledgements are outside the timing).
	for name, send := range map[string]func(*testing.B){"online/per-recipient": perRecipient, "online/multi": multi} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				send(b)
				b.StopTimer()
				drainAll(b, e)
				b.StartTimer()
			}
		})
	}
}

// drainAll deletes every queued envelope, as acknowledgements would.
func drainAll(b *testing.B, e *env) {
	rows, err := e.db.DumpTable(context.Background(), "envelopes")
	if err != nil {
		b.Fatal(err)
	}
	acks := make([]relay.Ack, 0, len(rows))
	for _, r := range rows {
		account, err := uuid.Parse(r["account_id"].(string))
		if err != nil {
			b.Fatal(err)
		}
		acks = append(acks, relay.Ack{Account: account, Device: int(r["device_id"].(int64)), Seq: r["seq"].(int64)})
	}
	if err := e.db.Delete(context.Background(), acks); err != nil {
		b.Fatal(err)
	}
}
