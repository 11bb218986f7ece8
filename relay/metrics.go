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
	batches prometheus.Counter
	sends   prometheus.Counter
	acks    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_relay_commit_seconds",
			Help:    "Time one batch of sends and acknowledgements took to commit (group commit: one transaction, one disk sync).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16)}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_commit_batches_total", Help: "Batches committed."}),
		sends:   prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_committed_sends_total", Help: "Send requests in committed batches (sends ÷ batches is the batch size)."}),
		acks:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_relay_committed_acks_total", Help: "Acknowledged envelopes deleted by committed batches."}),
	}
	reg.MustRegister(m.commit, m.batches, m.sends, m.acks,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_relay_connections", Help: "Device WebSockets open on this node."},
			func() float64 { return float64(s.hub.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_relay_polled_connections",
			Help: "Of those, the ones that wait in the poller with no goroutine of their own (plain TCP on Linux; a socket whose TLS parleyd terminates keeps a goroutine)."},
			func() float64 { return float64(s.pollerLen()) }))
	return m
}

// committed records one batch that took d.
func (m *metrics) committed(d time.Duration, sends, acks int) {
	if m == nil {
		return
	}
	m.commit.Observe(d.Seconds())
	m.batches.Inc()
	m.sends.Add(float64(sends))
	m.acks.Add(float64(acks))
}
