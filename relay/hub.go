package relay

import (
	"sync"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/wire"
)

// hub indexes this node's live connections by device. It is one flat map:
// a map per account cost an idle connection about 200 bytes more.
type hub struct {
	mu     sync.Mutex
	conns  map[deviceKey]*conn
	closed bool
}

// deviceKey names one device of one account.
type deviceKey struct {
	account uuid.UUID
	device  int
}

func newHub() *hub { return &hub{conns: map[deviceKey]*conn{}} }

// add registers c as its device's connection and returns the connection it
// replaces, if any. It reports false once the hub is closed.
func (h *hub) add(c *conn) (old *conn, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	k := deviceKey{c.account, c.device}
	old = h.conns[k]
	h.conns[k] = c
	return old, true
}

// remove unregisters c unless a newer connection has replaced it.
func (h *hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := deviceKey{c.account, c.device}
	if h.conns[k] == c {
		delete(h.conns, k)
	}
}

func (h *hub) get(account uuid.UUID, device int) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[deviceKey{account, device}]
}

// wake starts delivery on the device's connection; it reports whether the
// device is connected here.
func (h *hub) wake(account uuid.UUID, device int) bool {
	c := h.get(account, device)
	if c != nil {
		c.wake()
	}
	return c != nil
}

// deliverOnline hands an online-only envelope to the device's connection;
// it reports whether the device is connected here.
func (h *hub) deliverOnline(account uuid.UUID, e Envelope) bool {
	c := h.get(account, e.DestDevice)
	if c != nil {
		c.pushOnline(e)
	}
	return c != nil
}

// disconnect applies an EventDisconnect or EventConnected: connections of
// the device (or account) opened before the event are closed.
func (h *hub) disconnect(ev Event) {
	h.mu.Lock()
	var victims []*conn
	first, last := ev.Device, ev.Device
	if ev.Device == 0 { // every device of the account
		first, last = 1, MaxDevicesPerAccount
	}
	for dev := first; dev <= last; dev++ {
		c := h.conns[deviceKey{ev.Account, dev}]
		switch {
		case c == nil:
		case ev.Kind == EventDisconnect && c.since <= ev.At:
			victims = append(victims, c)
		case ev.Kind == EventConnected && c.since < ev.At:
			victims = append(victims, c)
		}
	}
	h.mu.Unlock()
	for _, c := range victims {
		if ev.Kind == EventDisconnect {
			c.close(wire.CloseDeviceRemoved, "device removed")
		} else {
			c.close(wire.CloseReplaced, "replaced by a newer connection")
		}
	}
}

func (h *hub) all() []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*conn, 0, len(h.conns))
	for _, c := range h.conns {
		out = append(out, c)
	}
	return out
}

func (h *hub) wakeAll() {
	for _, c := range h.all() {
		c.wake()
	}
}

// closeAll closes every connection with "going away" and refuses new ones.
func (h *hub) closeAll() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for _, c := range h.all() {
		c.close(1001, "server shutting down")
	}
}

func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}
