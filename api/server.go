// Package api is the relay's HTTP interface: routing, authentication,
// strict request decoding, rate-limit answers and the one JSON error format.
// openapi.yaml in this directory documents every endpoint; the tests check
// real requests and responses against it.
package api

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/directory"
	"github.com/parleyhq/parley/keys"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/sealedsender"
	"github.com/parleyhq/parley/verify"
)

// Pinger reports whether the database answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Server holds the services the handlers call.
type Server struct {
	Accounts  *accounts.Service
	Verify    *verify.Service
	PreKeys   *prekeys.Service
	Keys      keys.Store
	Relay     *relay.Service
	Directory *directory.Service
	// Attachments, if set, serves per-chat attachment buckets.
	Attachments *attachments.Service
	// Push holds the devices' push targets and what the relay pushes
	// through; without Targets the push endpoints are absent.
	Push PushConfig
	// Provisioning, if set, runs device linking's provisioning socket.
	Provisioning *provisioning.Service
	// Audit, if set, records security-relevant requests.
	Audit *audit.Log
	DB    Pinger
	Log   *slog.Logger
	// ClientIPHeader, if set, names a header (X-Forwarded-For, X-Real-IP)
	// set by a trusted reverse proxy, whose last address is the client's.
	ClientIPHeader string
	// Metrics, if set, receives request counters and latencies.
	Metrics prometheus.Registerer
	// Public caps unauthenticated requests (verification, registration)
	// per client address and in total, before any body is read.
	Public PublicLimits
	// LockChanges limits registration-lock changes (PUT and DELETE) per
	// account; nil uses DefaultLockChangeRule. Every change is audited, so
	// this also bounds what one account can write to the audit log.
	LockChanges *ratelimit.Limiter
	// SealedSender, if set, issues sender certificates for sealed sender;
	// without it the certificate endpoints answer 404
	// sealed_sender_disabled.
	SealedSender *sealedsender.Issuer

	// metrics is set by Handler, for requests served over WebSockets.
	metrics *metrics
	// wsBuffers is the write buffers every WebSocket shares.
	wsBuffers sync.Pool
}

// DefaultLockChangeRule allows an account 10 registration-lock changes at
// once, then one a minute; more answer 429.
var DefaultLockChangeRule = ratelimit.Rule{Burst: 10, Every: time.Minute}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error
type authedFunc func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error

// Handler returns the HTTP handler for the public API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	m := newMetrics(s.Metrics)
	s.metrics = m
	if s.LockChanges == nil {
		s.LockChanges = ratelimit.New(DefaultLockChangeRule, nil)
	}
	handle := func(pattern string, h handlerFunc) {
		mux.Handle(pattern, m.wrap(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				writeError(w, r, s.Log, err)
			}
		}))
	}
	public := func(pattern string, h handlerFunc) {
		handle(pattern, func(w http.ResponseWriter, r *http.Request) error {
			if err := s.allowPublic(r); err != nil {
				return err
			}
			return h(w, r)
		})
	}
	authed := func(pattern string, h authedFunc) {
		handle(pattern, func(w http.ResponseWriter, r *http.Request) error {
			p, err := s.authenticate(r)
			if err != nil {
				return err
			}
			return h(w, r, p)
		})
	}

	handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
		return nil
	})
	handle("GET /readyz", s.ready)

	public("POST /v1/verification/sessions", s.startVerification)
	public("POST /v1/verification/sessions/status", s.verificationStatus)
	public("POST /v1/verification/sessions/code", s.resendCode)
	public("PUT /v1/verification/sessions/code", s.checkCode)

	public("POST /v1/accounts", s.register)
	authed("GET /v1/accounts/me", s.whoami)
	authed("DELETE /v1/accounts/me", s.deleteAccount)
	authed("PUT /v1/accounts/me/registration-lock", s.setLock)
	authed("DELETE /v1/accounts/me/registration-lock", s.removeLock)
	authed("PUT /v1/accounts/me/unidentified-access", s.setUnidentifiedAccess)

	authed("GET /v1/devices", s.listDevices)
	authed("DELETE /v1/devices/{device}", s.removeDevice)
	authed("POST /v1/devices/link-code", s.newLinkCode)
	public("POST /v1/devices/link", s.linkDevice)
	if s.Provisioning != nil {
		handle("GET /v1/provisioning", s.provisioningSocket)
		authed("PUT /v1/provisioning/{address}", s.deliverProvisioning)
	}

	if s.Push.Targets != nil {
		authed("PUT /v1/devices/me/push", s.setPushTarget)
		authed("DELETE /v1/devices/me/push", s.removePushTarget)
		public("GET /v1/push", s.pushServices)
	}

	authed("POST /v1/directory", s.lookupNumber)

	authed("GET /v1/certificate/delivery", s.senderCertificate)
	public("GET /v1/certificate/trust-root", s.trustRoot)

	authed("PUT /v1/keys", s.uploadKeys)
	authed("GET /v1/keys/count", s.countKeys)
	authed("GET /v1/keys/{account}/{device}", s.fetchBundle)

	handle("PUT /v1/messages/{account}", s.sendMessagesOrSealed)
	handle("PUT /v1/messages/multi_recipient", s.sendMultiRecipientSealed)
	authed("PUT /v1/messages", s.sendMulti)
	authed("GET /v1/websocket", s.websocket)

	if s.Attachments != nil {
		authed("POST /v1/attachments/buckets", s.createBucket)
		authed("POST /v1/attachments/buckets/{bucket}/uploads", s.uploadObject)
		authed("POST /v1/attachments/buckets/{bucket}/downloads", s.downloadObject)
		authed("PUT /v1/attachments/buckets/{bucket}/member-secret", s.rotateMemberSecret)
		authed("PUT /v1/attachments/buckets/{bucket}/retention", s.setBucketRetention)
		authed("POST /v1/attachments/buckets/{bucket}/delete", s.deleteBucket)
		handle("GET "+attachments.ObjectPath+"{bucket}/{key}", s.serveObject)
		handle("PUT "+attachments.ObjectPath+"{bucket}/{key}", s.serveObject)
	}

	return muxErrorsAsJSON(mux)
}

// muxErrorsAsJSON turns ServeMux's own plain-text answers (404 for an
// unknown path, 405 for a known path with the wrong method) into the
// standard JSON error body. Handlers' answers are JSON already and pass.
func muxErrorsAsJSON(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w}, r)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	replaced bool
}

func (m *muxErrorWriter) WriteHeader(code int) {
	if strings.HasPrefix(m.Header().Get("Content-Type"), "text/plain") {
		switch code {
		case http.StatusNotFound:
			m.replaced = true
			writeJSON(m.ResponseWriter, code, errorBody{Error: errorDetail{Code: "not_found", Message: "no such endpoint"}})
			return
		case http.StatusMethodNotAllowed:
			m.replaced = true
			writeJSON(m.ResponseWriter, code, errorBody{Error: errorDetail{Code: "method_not_allowed", Message: "method not allowed for this endpoint"}})
			return
		}
	}
	m.ResponseWriter.WriteHeader(code)
}

// Hijack lets WebSocket upgrades through.
func (m *muxErrorWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(m.ResponseWriter).Hijack()
}

func (m *muxErrorWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.replaced {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

type statusBody struct {
	Status string `json:"status"`
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.DB.Ping(ctx); err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: "not_ready", Message: "database unavailable", Err: err}
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
	return nil
}

func (s *Server) authenticate(r *http.Request) (accounts.Principal, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return accounts.Principal{}, accounts.ErrUnauthorized
	}
	return s.Accounts.Authenticate(r.Context(), user, pass)
}

// clientIP returns the key under which per-IP limits count a request:
// the address itself for IPv4, its /64 for IPv6. It is never stored.
func (s *Server) clientIP(r *http.Request) string {
	addr := ""
	if s.ClientIPHeader != "" {
		if v := r.Header.Get(s.ClientIPHeader); v != "" {
			parts := strings.Split(v, ",")
			addr = strings.TrimSpace(parts[len(parts)-1])
		}
	}
	if addr == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		addr = host
	}
	ip := net.ParseIP(addr)
	if ip == nil {
		return addr
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}

// pathDevice parses a device id path segment (1–127).
func pathDevice(s string) (int, error) {
	d, err := strconv.Atoi(s)
	if err != nil || d < 1 || d > 127 || strconv.Itoa(d) != s {
		return 0, errorf(http.StatusBadRequest, "invalid_device_id", "device id must be an integer from 1 to 127")
	}
	return d, nil
}

// audit records a security-relevant event; a failure is logged by the
// audit log and does not fail the request, which has already taken effect.
func (s *Server) audit(r *http.Request, kind string, account uuid.UUID, device int, details map[string]string) {
	if s.Audit == nil {
		return
	}
	id := ""
	if account != uuid.Nil {
		id = account.String()
	}
	// The entry is written even if the client has gone: the change it
	// records has happened.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	_ = s.Audit.Record(ctx, kind, id, device, details)
}
