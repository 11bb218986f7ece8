package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsBroker drives NATS JetStream: one work-queue stream on file storage
// over inbox.> (a message is removed once its consumer acknowledges it, as
// parleyd's queue does), a durable pull consumer with explicit acks per
// device on inbox.<i>, each device on its own connection acknowledging every
// message it gets. Senders publish synchronously: js.Publish returns once
// the stream has stored the message (its PubAck).
type natsBroker struct {
	o        options
	mu       sync.Mutex
	conns    []*nats.Conn
	consumes []jetstream.ConsumeContext
}

const natsTimeout = 30 * time.Second

func (b *natsBroker) stream() string { return b.o.clientTag + "-inbox" }

func (b *natsBroker) dial(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(b.o.url, nats.Name(name), nats.Timeout(natsTimeout),
		nats.MaxReconnects(0), // a dropped connection is a failure of the run, not hidden
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fmt.Fprintf(os.Stderr, "nats client %s: %v\n", name, err)
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", name, err)
	}
	b.mu.Lock()
	b.conns = append(b.conns, nc)
	b.mu.Unlock()
	js, err := jetstream.New(nc)
	return nc, js, err
}

func (b *natsBroker) Connect(ctx context.Context, n int, deliver func(int, []byte)) error {
	_, js, err := b.dial(b.o.clientTag + "-admin")
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	_, err = js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name:      b.stream(),
		Subjects:  []string{"inbox.>"},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy,
		Replicas:  1,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", b.stream(), err)
	}
	return parallel(n, 16, func(i int) error {
		name := b.o.clientTag + "-dev-" + strconv.Itoa(i)
		_, js, err := b.dial(name)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, natsTimeout)
		defer cancel()
		c, err := js.CreateOrUpdateConsumer(cctx, b.stream(), jetstream.ConsumerConfig{
			Durable:       name,
			FilterSubject: "inbox." + strconv.Itoa(i),
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return fmt.Errorf("consumer for device %d: %w", i, err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) {
			deliver(i, m.Data())
			if err := m.Ack(); err != nil {
				fmt.Fprintf(os.Stderr, "device %d: ack: %v\n", i, err)
			}
		}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			fmt.Fprintf(os.Stderr, "device %d: consume: %v\n", i, err)
		}))
		if err != nil {
			return fmt.Errorf("consume for device %d: %w", i, err)
		}
		b.mu.Lock()
		b.consumes = append(b.consumes, cc)
		b.mu.Unlock()
		return nil
	})
}

func (b *natsBroker) Sender(ctx context.Context, i int) (sender, error) {
	_, js, err := b.dial(b.o.clientTag + "-sender-" + strconv.Itoa(i))
	if err != nil {
		return nil, err
	}
	return natsSender{js}, nil
}

func (b *natsBroker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, cc := range b.consumes {
		cc.Stop()
	}
	for _, nc := range b.conns {
		nc.Close()
	}
	b.consumes, b.conns = nil, nil
}

type natsSender struct{ js jetstream.JetStream }

func (s natsSender) Publish(ctx context.Context, device int, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	_, err := s.js.Publish(ctx, "inbox."+strconv.Itoa(device), payload)
	return err
}

func (s natsSender) Close() {} // the broker closes every connection
