package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// mqttBroker drives an MQTT broker (mosquitto) at QoS 1. Every device is a
// client with a persistent session (clean session off, a fixed client id)
// subscribed at QoS 1 to its own inbox/<i>, so the broker keeps its
// messages while it is away; paho acknowledges each delivery (PUBACK) once
// the handler has returned. Senders publish at QoS 1 and wait for the
// broker's PUBACK.
type mqttBroker struct {
	o       options
	mu      sync.Mutex
	clients []mqtt.Client
}

const mqttTimeout = 30 * time.Second

func (b *mqttBroker) options(id string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(b.o.url).
		SetClientID(id).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetConnectTimeout(mqttTimeout).
		SetKeepAlive(time.Minute).
		SetAutoReconnect(false). // a dropped connection is a failure of the run, not hidden
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			fmt.Fprintf(os.Stderr, "mqtt client %s lost its connection: %v\n", id, err)
		})
}

func (b *mqttBroker) connect(ctx context.Context, o *mqtt.ClientOptions) (mqtt.Client, error) {
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("connect %s: %w", o.ClientID, err)
	}
	b.mu.Lock()
	b.clients = append(b.clients, c)
	b.mu.Unlock()
	return c, nil
}

func (b *mqttBroker) Connect(ctx context.Context, n int, deliver func(int, []byte)) error {
	return parallel(n, 16, func(i int) error {
		// The handler is set before connecting: a persistent session may
		// hold messages that arrive before the subscription is renewed.
		o := b.options(b.o.clientTag + "-dev-" + strconv.Itoa(i)).
			SetCleanSession(false).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { deliver(i, m.Payload()) })
		c, err := b.connect(ctx, o)
		if err != nil {
			return err
		}
		if err := wait(ctx, c.Subscribe("inbox/"+strconv.Itoa(i), 1, nil)); err != nil {
			return fmt.Errorf("subscribe device %d: %w", i, err)
		}
		return nil
	})
}

func (b *mqttBroker) Sender(ctx context.Context, i int) (sender, error) {
	c, err := b.connect(ctx, b.options(b.o.clientTag+"-sender-"+strconv.Itoa(i)).SetCleanSession(true))
	if err != nil {
		return nil, err
	}
	return mqttSender{c}, nil
}

func (b *mqttBroker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.clients {
		c.Disconnect(100)
	}
	b.clients = nil
}

type mqttSender struct{ c mqtt.Client }

func (s mqttSender) Publish(ctx context.Context, device int, payload []byte) error {
	return wait(ctx, s.c.Publish("inbox/"+strconv.Itoa(device), 1, false, payload))
}

func (s mqttSender) Close() {} // the broker disconnects every client

// wait waits for a paho token: for QoS 1 publishes, the PUBACK.
func wait(ctx context.Context, t mqtt.Token) error {
	timer := time.NewTimer(mqttTimeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("no answer from the broker within " + mqttTimeout.String())
	}
}
