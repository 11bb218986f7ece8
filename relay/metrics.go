package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's figures for operators (Config.Metrics): how
// long batches take to commit and how full they are, and how many
// sockets the node holds and how many of those wait in the poller.
type metrics struct {
	commit  prometheus.Histogram
	size    prometheus.Histogram
	batches prometheus.Counter
	sends   prometheus.Counter
	acks    prometheus.Counter
	failed  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_relay_commit_seconds",
			Help:    "Time one batch of sends and acknowledgements took to store (group commit: one transaction and one disk sync, more when a failed batch is retried request by request).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16)}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_relay_commit_sends",
			Help:    "Send requests per batch, of batches that carry sends (batches of acknowledgements alone are not counted).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_commit_batches_total", Help: "Batches stored, with sends or acknowledgements or both."}),
		sends:   prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_committed_sends_total", Help: "Send requests in batches (each answered, stored or refused)."}),
		acks:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_committed_acks_total", Help: "Acknowledged envelopes deleted."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_commit_failures_total", Help: "Batches whose acknowledgements could not be deleted (the envelopes are delivered again)."}),
	}
	reg.MustRegister(m.commit, m.size, m.batches, m.sends, m.acks, m.failed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_relay_connections", Help: "Device WebSockets open on this node."},
			func() float64 { return float64(s.hub.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_relay_polled_connections",
			Help: "Sockets registered with the poller: no goroutine of their own while idle (plain TCP on Linux; a socket whose TLS parleyd terminates keeps one). Counted until the socket closes, so briefly more than parley_relay_connections while a replaced socket closes."},
			func() float64 { return float64(s.pollerLen()) }))
	return m
}

// committed records one batch that took d; err is the store's error for
// its acknowledgements.
func (m *metrics) committed(d time.Duration, sends, acks int, err error) {
	if m == nil {
		return
	}
	m.commit.Observe(d.Seconds())
	m.batches.Inc()
	if sends > 0 {
		m.size.Observe(float64(sends))
		m.sends.Add(float64(sends))
	}
	if err != nil {
		m.failed.Inc()
		return
	}
	m.acks.Add(float64(acks))
}
