package api

import (
	"net/http"
	"time"

	"github.com/parleyhq/parley/ratelimit"
)

// Default caps on unauthenticated requests (phone verification and
// registration): per client address (an IPv4 address or an IPv6 /64), and
// over all addresses together. A registration takes about four requests,
// so an address behind carrier NAT still registers many phones a minute,
// while one host cannot monopolise the relay's CPU with requests that no
// credential stands behind.
var (
	DefaultPublicPerIP  = ratelimit.Rule{Burst: 30, Every: 2 * time.Second}       // 30 at once, then 30 a minute
	DefaultPublicGlobal = ratelimit.Rule{Burst: 500, Every: 5 * time.Millisecond} // 500 at once, then 200 a second
)

// PublicLimits caps unauthenticated requests. A nil Limiter allows
// everything.
type PublicLimits struct {
	PerIP, Global *ratelimit.Limiter
}

// allowPublic takes one token from the caller's address and one from the
// global budget; the address is checked first, so one address that is
// refused does not spend the budget of everyone else.
func (s *Server) allowPublic(r *http.Request) error {
	if ok, wait := s.Public.PerIP.Allow(s.clientIP(r)); !ok {
		return &ratelimit.Error{RetryAfter: wait}
	}
	if ok, wait := s.Public.Global.Allow(""); !ok {
		return &ratelimit.Error{RetryAfter: wait}
	}
	return nil
}
