//go:build !linux

package relay

import (
	"errors"
	"log/slog"
)

// poller is Linux-only (epoll); elsewhere every connection keeps a
// goroutine waiting on its socket.
type poller struct{}

func newPoller(*slog.Logger) (*poller, error) {
	return nil, errors.New("relay: no poller on this system")
}

func (p *poller) add(c *conn, fd int) error { return errors.New("relay: no poller on this system") }
func (p *poller) rearm(c *conn) bool        { return false }
func (p *poller) remove(c *conn)            {}
func (p *poller) close()                    {}
func (p *poller) len() int                  { return 0 }
