//go:build linux

package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"
)

// poller lets idle connections wait for their next frame without a
// goroutine each: one epoll instance per node watches every polled socket,
// registered one-shot, and starts a goroutine only when one becomes
// readable (conn.readable), which re-arms it once nothing is left buffered.
// This is what keeps an idle connection to a few KiB (a parked goroutine's
// stack alone was about 4 KiB).
//
// Registrations are keyed by a token that is never reused, not by the
// descriptor number: an event already taken from the kernel for a socket
// that was removed and closed meanwhile must not reach a newer socket that
// got the same number. remove runs before every close of a polled socket
// (conn.finish), so the kernel never holds a registration for a closed
// descriptor either.
type poller struct {
	epfd int // the epoll instance
	wake int // an eventfd that ends run (token 0)
	log  *slog.Logger

	mu    sync.Mutex
	conns map[uint64]*conn
	next  uint64
	// closed refuses new registrations (after close, or when run
	// failed); stopped records that close ran.
	closed, stopped bool
	done            chan struct{}
}

// pollEvents arm a socket for one readiness report: data, the peer's
// shutdown, or an error (EPOLLERR and EPOLLHUP are always reported).
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// errPollerClosed is returned by add once the poller has stopped.
var errPollerClosed = errors.New("relay: poller closed")

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := pollEvent(unix.EPOLLIN, 0)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	p := &poller{epfd: epfd, wake: wake, log: log, conns: map[uint64]*conn{}, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func pollEvent(events uint32, token uint64) unix.EpollEvent {
	return unix.EpollEvent{Events: events, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
}

func eventToken(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// add watches c's socket (descriptor fd); its first readiness starts
// c.readable.
func (p *poller) add(c *conn, fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPollerClosed
	}
	p.next++
	ev := pollEvent(pollEvents, p.next)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	c.token, c.fd = p.next, fd
	p.conns[p.next] = c
	return nil
}

// rearm watches c's socket for its next readiness; it reports false when
// c is no longer registered (it is being removed) or cannot be re-armed.
func (p *poller) rearm(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[c.token] != c {
		return false
	}
	ev := pollEvent(pollEvents, c.token)
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev) == nil
}

// remove stops watching c's socket; it must run before the socket closes.
// Removing twice is harmless.
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[c.token] != c {
		return
	}
	delete(p.conns, c.token)
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

// len is how many sockets are registered.
func (p *poller) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// run starts a reader for each socket reported ready, until close.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Not expected with a valid epoll descriptor. New
			// connections get a goroutine each (add fails); the polled
			// ones go unread until their ping deadline drops them, and
			// their devices reconnect.
			p.log.Error("epoll_wait failed; new connections are no longer polled", "err", err)
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			return
		}
		for i := range events[:n] {
			tok := eventToken(&events[i])
			if tok == 0 {
				return
			}
			p.mu.Lock()
			c := p.conns[tok]
			if c != nil {
				// Counted while registered, so before remove lets the
				// connection's own count go (Service.Shutdown waits).
				c.s.conns.Add(1)
			}
			p.mu.Unlock()
			if c != nil {
				go c.readable()
			}
		}
	}
}

// close stops the poller once every polled connection has been removed.
func (p *poller) close() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped, p.closed = true, true
	p.mu.Unlock()
	one := [8]byte{1} // an eventfd takes any non-zero 8-byte count
	_, _ = unix.Write(p.wake, one[:])
	<-p.done // at once if run ended on an error
	unix.Close(p.epfd)
	unix.Close(p.wake)
}
