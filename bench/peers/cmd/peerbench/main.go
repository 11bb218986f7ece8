// Command peerbench drives other message brokers with the workload shape of
// parley-bench, so parleyd's figures can be read next to theirs: devices
// with a durable inbox each, concurrent senders that each wait for the
// broker's acknowledgement (the message is stored) before the next send,
// every message delivered to its device and acknowledged by it.
//
//	peerbench mqtt --url tcp://127.0.0.1:1883   mosquitto (QoS 1, persistent sessions)
//	peerbench nats --url nats://127.0.0.1:4222  NATS JetStream (file storage, work-queue stream)
//
// Each run prints one line; with --json, one JSON object on stdout instead
// (progress goes to stderr).
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// options are the flags shared by every system.
type options struct {
	url       string
	devices   int
	messages  int
	size      int
	senders   int
	timeout   time.Duration
	pid       int
	json      bool
	clientTag string // prefix of client ids, consumer names
}

// broker is one system under test.
type broker interface {
	// Connect connects devices 0..n-1, each receiving its inbox through
	// deliver (called once per delivery, before the device acknowledges
	// it), and returns once every device is ready to receive.
	Connect(ctx context.Context, n int, deliver func(device int, payload []byte)) error
	// Sender opens one sender's connection.
	Sender(ctx context.Context, i int) (sender, error)
	Close()
}

// sender publishes to device inboxes.
type sender interface {
	// Publish returns once the broker has acknowledged the message as
	// stored (MQTT PUBACK, JetStream PubAck).
	Publish(ctx context.Context, device int, payload []byte) error
	Close()
}

// Result is what a run measured; its JSON form is the line scripts read.
type Result struct {
	System     string  `json:"system"`
	Messages   int     `json:"messages"` // distinct messages delivered
	Seconds    float64 `json:"seconds"`  // first publish to last delivery
	Rate       float64 `json:"rate"`     // Messages / Seconds
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	Failed     int     `json:"failed"`     // publishes not acknowledged, plus acknowledged ones never delivered
	Duplicates int     `json:"duplicates"` // deliveries of a message id already seen

	sent, pubFailed, lost, leftover int
	max                             time.Duration
	server                          string
}

func (r Result) String() string {
	return fmt.Sprintf("%s: %d messages in %.2fs = %.0f messages/s published (broker ack awaited), delivered and acknowledged; latency p50 %.2fms p99 %.2fms max %v; %d failed (%d publishes unacknowledged, %d acknowledged but not delivered), %d duplicates, %d left over from an earlier run; server %s",
		r.System, r.Messages, r.Seconds, r.Rate, r.P50ms, r.P99ms, r.max.Round(10*time.Microsecond),
		r.Failed, r.pubFailed, r.lost, r.Duplicates, r.leftover, r.server)
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "mqtt" && os.Args[1] != "nats") {
		fmt.Fprintln(os.Stderr, "usage: peerbench mqtt|nats [flags]  (peerbench mqtt -h for the flags)")
		os.Exit(2)
	}
	system := os.Args[1]
	var o options
	fs := flag.NewFlagSet("peerbench "+system, flag.ExitOnError)
	defURL := map[string]string{"mqtt": "tcp://127.0.0.1:1883", "nats": "nats://127.0.0.1:4222"}[system]
	fs.StringVar(&o.url, "url", defURL, "broker `URL`")
	fs.IntVar(&o.devices, "devices", 200, "devices, each with its own connection and durable inbox")
	fs.IntVar(&o.messages, "messages", 20000, "messages to send")
	fs.IntVar(&o.size, "size", 1024, "payload `bytes` per message (at least 24: send time, id, run)")
	fs.IntVar(&o.senders, "senders", 32, "concurrent senders, each with its own connection, each waiting for the broker's acknowledgement before its next publish")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait, after the last publish, for every acknowledged message to be delivered")
	fs.IntVar(&o.pid, "pid", 0, "the broker's process id, to report its CPU and memory (optional)")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	fs.StringVar(&o.clientTag, "client-prefix", "peerbench", "prefix of client ids and consumer names")
	fs.Parse(os.Args[2:])
	if fs.NArg() != 0 || o.devices < 1 || o.messages < 1 || o.senders < 1 {
		fs.Usage()
		os.Exit(2)
	}
	o.size = max(o.size, headerLen)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var b broker
	switch system {
	case "mqtt":
		b = &mqttBroker{o: o}
	case "nats":
		b = &natsBroker{o: o}
	}
	r, err := run(ctx, b, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "peerbench %s: %v\n", system, err)
		os.Exit(1)
	}
	r.System = map[string]string{"mqtt": "mosquitto", "nats": "nats-jetstream"}[system]
	if o.json {
		out, _ := json.Marshal(r)
		fmt.Println(string(out))
		fmt.Fprintln(os.Stderr, r) // the human line too, where people look
	} else {
		fmt.Println(r)
	}
}

// The payload starts with the send time (Unix ns), the message's id and the
// run's random tag, big-endian; the rest is random.
const headerLen = 24

func run(ctx context.Context, b broker, o options) (Result, error) {
	defer b.Close()
	var runTag uint64
	{
		var t [8]byte
		rand.Read(t[:])
		runTag = binary.BigEndian.Uint64(t[:])
	}
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, o.messages)
		seen      = make([]bool, o.messages)
		dups      int
		leftover  int
		lastAt    time.Time
	)
	deliver := func(device int, p []byte) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if len(p) < headerLen || binary.BigEndian.Uint64(p[16:]) != runTag {
			leftover++
			return
		}
		id := binary.BigEndian.Uint64(p[8:])
		if id >= uint64(len(seen)) {
			leftover++
			return
		}
		if seen[id] {
			dups++
			return
		}
		seen[id] = true
		latencies = append(latencies, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(p)))))
		lastAt = now
	}
	setup := time.Now()
	if err := b.Connect(ctx, o.devices, deliver); err != nil {
		return Result{}, err
	}
	senders := make([]sender, o.senders)
	for i := range senders {
		s, err := b.Sender(ctx, i)
		if err != nil {
			return Result{}, fmt.Errorf("sender %d: %w", i, err)
		}
		senders[i] = s
		defer s.Close()
	}
	fmt.Fprintf(os.Stderr, "%d devices and %d senders connected in %.1fs\n", o.devices, o.senders, time.Since(setup).Seconds())

	before := readUsage(o.pid)
	start := time.Now()
	var next, sent, failed atomic.Int64
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() {
			rnd := make([]byte, o.size)
			rand.Read(rnd)
			for {
				id := next.Add(1) - 1
				if id >= int64(o.messages) || ctx.Err() != nil {
					return
				}
				// A fresh buffer each time: a client may keep the payload
				// until it is acknowledged (for a resend), past a failure.
				p := slices.Clone(rnd)
				binary.BigEndian.PutUint64(p[8:], uint64(id))
				binary.BigEndian.PutUint64(p[16:], runTag)
				binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
				if err := s.Publish(ctx, mrand.IntN(o.devices), p); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				sent.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(latencies)
	}
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "sent %d/%d, delivered %d\n", sent.Load(), o.messages, delivered())
		}
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "%d publishes failed; the first: %v\n", failed.Load(), firstErr)
	}
	// Elapsed ends at the last delivery, so polling here does not blur it.
	deadline := time.Now().Add(o.timeout)
	for delivered() < int(sent.Load()) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	after := readUsage(o.pid)

	mu.Lock()
	defer mu.Unlock()
	r := Result{
		Messages: len(latencies), Duplicates: dups,
		sent: int(sent.Load()), pubFailed: int(failed.Load()), leftover: leftover,
		server: after.since(before),
	}
	if n := r.sent - r.Messages; n > 0 {
		r.lost = n
		fmt.Fprintf(os.Stderr, "%d acknowledged messages were not delivered within %v\n", n, o.timeout)
	}
	r.Failed = r.pubFailed + r.lost
	if len(latencies) > 0 {
		elapsed := lastAt.Sub(start).Seconds()
		r.Seconds = math.Round(elapsed*1000) / 1000
		r.Rate = math.Round(float64(r.Messages)/elapsed*10) / 10
		slices.Sort(latencies)
		pct := func(p float64) float64 {
			d := latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
			return float64(d.Microseconds()) / 1000
		}
		r.P50ms, r.P99ms = pct(0.50), pct(0.99)
		r.max = latencies[len(latencies)-1]
	}
	return r, nil
}

// usage is a process's CPU time (user + system) and resident memory.
type usage struct {
	at  time.Time
	cpu time.Duration
	rss int64
}

// readUsage reads /proc/PID/stat; the zero usage if pid is 0 or unreadable.
func readUsage(pid int) usage {
	if pid == 0 {
		return usage{}
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return usage{}
	}
	// Fields after the command name (which may hold spaces), from field 3.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 22 {
		return usage{}
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return usage{at: time.Now(), cpu: time.Duration(utime+stime) * time.Second / hz, rss: rss * int64(os.Getpagesize())}
}

func (u usage) since(before usage) string {
	if u.at.IsZero() || before.at.IsZero() {
		return "not measured"
	}
	cores := (u.cpu - before.cpu).Seconds() / u.at.Sub(before.at).Seconds()
	return fmt.Sprintf("CPU %.2f cores, RSS %.1f MiB", cores, float64(u.rss)/(1<<20))
}

// parallel calls fn(0..n-1) from `workers` goroutines and returns the
// first error, after every call has returned.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // no further calls
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
