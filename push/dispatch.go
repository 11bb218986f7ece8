package push

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the Dispatcher needs of the database.
type Store interface {
	// ClaimPush returns the device's target and true if the device may
	// be pushed now: it has a target, was not pushed within interval
	// before now and is not backed off; the claim is recorded in the same
	// statement, so of several replicas only one gets true.
	ClaimPush(ctx context.Context, account uuid.UUID, device int, now time.Time, interval time.Duration) (Target, bool, error)
	// BackOffPush delays the device's next push until until.
	BackOffPush(ctx context.Context, account uuid.UUID, device int, until time.Time) error
	// DeletePushTarget removes the device's target if it is still t.
	DeletePushTarget(ctx context.Context, account uuid.UUID, device int, t Target) error
	// NeedsPush reports whether the device has a push target and
	// undelivered envelopes.
	NeedsPush(ctx context.Context, account uuid.UUID, device int, now time.Time) (bool, error)
}

// Config tunes a Dispatcher.
type Config struct {
	// Delay is how long after envelopes are stored the device is
	// checked: a device connected anywhere has drained them by then.
	Delay time.Duration
	// Interval is the least time between two pushes to one device.
	Interval time.Duration
	// Workers is how many pushes each service may have in flight (the
	// dispatcher runs that many per service); Queue bounds the checks
	// waiting for a worker (more are dropped and counted).
	Workers, Queue int
	// Timeout bounds one push.
	Timeout time.Duration
}

// DefaultConfig is the Dispatcher's default tuning.
var DefaultConfig = Config{Delay: 2 * time.Second, Interval: time.Minute, Workers: 4, Queue: 10000, Timeout: 10 * time.Second}

type deviceKey struct {
	account uuid.UUID
	device  int
}

// Dispatcher schedules and sends wake-ups.
type Dispatcher struct {
	store   Store
	senders map[Kind]Sender
	live    func(uuid.UUID, int) bool
	cfg     Config
	log     *slog.Logger
	now     func() time.Time

	queue chan deviceKey
	// busy bounds the pushes in flight per service, so a slow service (or
	// slow client-given Web Push endpoints) cannot hold every worker.
	busy map[Kind]chan struct{}

	mu        sync.Mutex
	scheduled map[deviceKey]bool // device → urgent, waiting for its check

	sent, failed, gone *prometheus.CounterVec
	dropped            prometheus.Counter
	latency            *prometheus.HistogramVec
}

// NewDispatcher returns a Dispatcher pushing through senders (by kind);
// live reports a device connected to this node. Metrics are registered
// with reg when it is not nil.
func NewDispatcher(store Store, senders map[Kind]Sender, live func(uuid.UUID, int) bool, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Dispatcher {
	d := &Dispatcher{store: store, senders: senders, live: live, cfg: cfg, log: log, now: time.Now,
		queue: make(chan deviceKey, cfg.Queue), scheduled: map[deviceKey]bool{}, busy: map[Kind]chan struct{}{},
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_push_sent_total", Help: "Wake-ups the push services accepted."}, []string{"kind"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_push_failed_total", Help: "Wake-ups that failed, by kind and reason (gone, retry, error)."}, []string{"kind", "reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_push_dropped_total", Help: "Wake-ups dropped because the push queue was full."}),
		gone:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_push_targets_deleted_total", Help: "Push targets deleted because their service said they are gone."}, []string{"kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "parley_push_latency_seconds", Help: "Time a push service took to answer.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}, []string{"kind"}),
	}
	for k := range senders {
		d.busy[k] = make(chan struct{}, max(cfg.Workers, 1))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{d.sent, d.failed, d.dropped, d.gone, d.latency} {
			reg.MustRegister(c)
		}
	}
	return d
}

// Stored tells the dispatcher that envelopes were stored for a device
// that was not connected here. It never blocks: the check runs Delay
// later, and a burst of envelopes gives one check.
func (d *Dispatcher) Stored(account uuid.UUID, device int, urgent bool) {
	d.schedule(deviceKey{account, device}, urgent, d.cfg.Delay)
}

// schedule queues a check of k after wait, unless one is waiting.
func (d *Dispatcher) schedule(k deviceKey, urgent bool, wait time.Duration) {
	d.mu.Lock()
	was, waiting := d.scheduled[k]
	d.scheduled[k] = was || urgent
	d.mu.Unlock()
	if waiting {
		return
	}
	time.AfterFunc(wait, func() {
		select {
		case d.queue <- k:
		default:
			d.mu.Lock()
			delete(d.scheduled, k)
			d.mu.Unlock()
			d.dropped.Inc()
			d.log.Warn("push queue full; wake-up dropped", "account", k.account, "device", k.device)
		}
	})
}

// Run pushes until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range max(d.cfg.Workers, 1) * max(len(d.senders), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case k := <-d.queue:
					d.mu.Lock()
					urgent := d.scheduled[k]
					delete(d.scheduled, k)
					d.mu.Unlock()
					d.check(ctx, k, urgent)
				}
			}
		}()
	}
	wg.Wait()
}

// check pushes to k if it still has undelivered envelopes and a target,
// is not connected here, and no replica pushed it within the interval. A
// device pushed too recently, or whose push failed for a passing reason,
// is checked again an interval later, so no burst goes without a push.
func (d *Dispatcher) check(ctx context.Context, k deviceKey, urgent bool) {
	if d.live != nil && d.live(k.account, k.device) {
		return
	}
	again := func() { d.schedule(k, urgent, d.cfg.Interval) }
	cctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	now := d.now()
	needs, err := d.store.NeedsPush(cctx, k.account, k.device, now)
	if err != nil {
		d.log.Warn("push check failed", "account", k.account, "device", k.device, "err", err)
		again()
		return
	}
	if !needs {
		return
	}
	t, ok, err := d.store.ClaimPush(cctx, k.account, k.device, now, d.cfg.Interval)
	if err != nil {
		d.log.Warn("push claim failed", "account", k.account, "device", k.device, "err", err)
		again()
		return
	}
	if !ok { // pushed within the interval (here or by another replica), or backed off
		again()
		return
	}
	s := d.senders[t.Kind]
	if s == nil {
		d.failed.WithLabelValues(string(t.Kind), "not_configured").Inc()
		d.log.Warn("device has a push target of a service this relay is not configured for", "kind", t.Kind, "account", k.account, "device", k.device)
		return
	}
	select {
	case d.busy[t.Kind] <- struct{}{}:
		defer func() { <-d.busy[t.Kind] }()
	default:
		// This service has Workers pushes in flight already: try again
		// an interval later (the claim is spent) rather than queue here.
		d.failed.WithLabelValues(string(t.Kind), "busy").Inc()
		again()
		return
	}
	start := time.Now()
	err = s.Push(cctx, t, urgent)
	d.latency.WithLabelValues(string(t.Kind)).Observe(time.Since(start).Seconds())
	// Follow-ups get their own time: the push may have used all of it.
	fctx, fcancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer fcancel()
	var re *RetryError
	switch {
	case err == nil:
		d.sent.WithLabelValues(string(t.Kind)).Inc()
	case errors.Is(err, ErrGone):
		d.failed.WithLabelValues(string(t.Kind), "gone").Inc()
		if err := d.store.DeletePushTarget(fctx, k.account, k.device, t); err != nil {
			d.log.Warn("cannot delete a gone push target", "account", k.account, "device", k.device, "err", err)
			return
		}
		d.gone.WithLabelValues(string(t.Kind)).Inc()
		d.log.Info("push target gone; deleted", "kind", t.Kind, "account", k.account, "device", k.device)
	case errors.As(err, &re):
		d.failed.WithLabelValues(string(t.Kind), "retry").Inc()
		if err := d.store.BackOffPush(fctx, k.account, k.device, now.Add(max(re.After, d.cfg.Interval))); err != nil {
			d.log.Warn("cannot back a push target off", "account", k.account, "device", k.device, "err", err)
		}
		d.log.Info("push service asked to back off", "kind", t.Kind, "account", k.account, "device", k.device, "after", re.After)
		d.schedule(k, urgent, max(re.After, d.cfg.Interval))
	default:
		d.failed.WithLabelValues(string(t.Kind), "error").Inc()
		d.log.Warn("push failed; trying again later", "kind", t.Kind, "account", k.account, "device", k.device, "err", err)
		again()
	}
}
