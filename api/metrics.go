package api

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts requests per route pattern and status (never per path, so
// account ids never become label values).
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// frames counts requests served over WebSockets, by route and status.
	frames *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_websocket_requests_total", Help: "Requests served over WebSockets (message sends) by route and status code.",
		}, []string{"route", "code"}),
	}
	reg.MustRegister(m.requests, m.latency, m.frames)
	return m
}

// frame counts one request served over a WebSocket.
func (m *metrics) frame(route string, code int) {
	if m != nil {
		m.frames.WithLabelValues(route, strconv.Itoa(code)).Inc()
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Hijack hands the connection to a WebSocket upgrader, which writes its
// 101 answer itself.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err == nil && s.code == 0 {
		s.code = http.StatusSwitchingProtocols
	}
	return c, rw, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (m *metrics) wrap(route string, h http.HandlerFunc) http.Handler {
	if m == nil {
		return h
	}
	lat := m.latency.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r)
		lat.Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}
