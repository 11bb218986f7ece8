package spqr

import (
	"encoding/binary"
	"fmt"
)

// The symmetric chain (crate: src/chain.rs). Every epoch secret produced by
// the KEM braid starts a new pair of send/receive hash chains; message keys
// are successive outputs of those chains, numbered from 1.

const (
	defaultMaxJump    = 25000
	defaultMaxOOOKeys = 2000
	keyHistEntry      = 4 + 32 // BE32 index ‖ key
	// epochsToKeepPriorToSendEpoch is how many epochs before the current
	// send epoch keep their receive chains.
	epochsToKeepPriorToSendEpoch = 1
)

// chainParams holds the values as stored (0 means the default).
type chainParams struct {
	maxJump    uint32
	maxOOOKeys uint32
}

func (p chainParams) jump() uint32 {
	if p.maxJump > 0 {
		return p.maxJump
	}
	return defaultMaxJump
}

func (p chainParams) ooo() uint32 {
	if p.maxOOOKeys > 0 {
		return p.maxOOOKeys
	}
	return defaultMaxOOOKeys
}

func (p chainParams) trimSize() int { return int(p.ooo())*11/10 + 1 }

// chainDir is one direction (send or receive) of one epoch.
type chainDir struct {
	ctr  uint32
	next []byte // 32 bytes, or empty once the chain is retired
	// prev holds skipped keys, each BE32(index) ‖ key, in no particular order.
	prev []byte
}

type chainEpoch struct {
	send, recv chainDir
}

type chain struct {
	dir          Direction
	currentEpoch uint64
	sendEpoch    uint64
	links        []chainEpoch // links[len-1] is currentEpoch
	nextRoot     []byte
	params       chainParams
}

func dirKeys(gen []byte, d Direction) []byte {
	if d == A2B {
		return append([]byte(nil), gen[32:64]...)
	}
	return append([]byte(nil), gen[64:96]...)
}

func newChain(authKey []byte, dir Direction, params chainParams) *chain {
	gen := kdf(zeroSalt, authKey, labelChainStart, 96)
	return &chain{
		dir:      dir,
		links:    []chainEpoch{{send: chainDir{next: dirKeys(gen, dir)}, recv: chainDir{next: dirKeys(gen, dir.other())}}},
		nextRoot: append([]byte(nil), gen[:32]...),
		params:   params,
	}
}

func (c *chain) addEpoch(epoch uint64, secret []byte) error {
	if epoch != c.currentEpoch+1 {
		return fmt.Errorf("%w: epoch secret for %d at chain epoch %d", ErrStateDecode, epoch, c.currentEpoch)
	}
	gen := kdf(c.nextRoot, secret, labelChainAdd, 96)
	c.currentEpoch = epoch
	c.nextRoot = append([]byte(nil), gen[:32]...)
	c.links = append(c.links, chainEpoch{send: chainDir{next: dirKeys(gen, c.dir)}, recv: chainDir{next: dirKeys(gen, c.dir.other())}})
	return nil
}

func (c *chain) epochIdx(epoch uint64) (int, error) {
	if epoch > c.currentEpoch {
		return 0, fmt.Errorf("%w: %d", ErrEpochOutOfRange, epoch)
	}
	back := c.currentEpoch - epoch
	if back >= uint64(len(c.links)) {
		return 0, fmt.Errorf("%w: %d", ErrEpochOutOfRange, epoch)
	}
	return len(c.links) - 1 - int(back), nil
}

// sendKey returns the next sending key of epoch and its index.
func (c *chain) sendKey(epoch uint64) (uint32, []byte, error) {
	if epoch < c.sendEpoch {
		return 0, nil, fmt.Errorf("%w: %d -> %d", ErrSendKeyEpochDecreased, c.sendEpoch, epoch)
	}
	idx, err := c.epochIdx(epoch)
	if err != nil {
		return 0, nil, err
	}
	if c.sendEpoch != epoch {
		c.sendEpoch = epoch
		if idx > epochsToKeepPriorToSendEpoch {
			drop := idx - epochsToKeepPriorToSendEpoch
			c.links = append([]chainEpoch(nil), c.links[drop:]...)
			idx -= drop
		}
		for i := 0; i < idx; i++ {
			c.links[i].send.next = nil
		}
	}
	d := &c.links[idx].send
	if len(d.next) != 32 || d.ctr == ^uint32(0) {
		return 0, nil, ErrChainNotAvailable
	}
	i, k := d.nextKey()
	return i, k, nil
}

// recvKey returns the receiving key of epoch at index.
func (c *chain) recvKey(epoch uint64, index uint32) ([]byte, error) {
	idx, err := c.epochIdx(epoch)
	if err != nil {
		return nil, err
	}
	return c.links[idx].recv.key(index, c.params)
}

func (d *chainDir) nextKey() (uint32, []byte) {
	d.ctr++
	info := binary.BigEndian.AppendUint32(nil, d.ctr)
	gen := kdf(zeroSalt, d.next, string(info)+labelChainNext, 64)
	d.next = gen[:32:32]
	return d.ctr, gen[32:]
}

func (d *chainDir) key(at uint32, p chainParams) ([]byte, error) {
	switch {
	case at > d.ctr:
		if at-d.ctr > p.jump() {
			return nil, fmt.Errorf("%w: %d - %d", ErrKeyJump, d.ctr, at)
		}
	case at < d.ctr:
		return d.histGet(at, p)
	default:
		return nil, fmt.Errorf("%w: %d", ErrKeyAlreadyRequested, at)
	}
	if len(d.next) != 32 {
		return nil, ErrChainNotAvailable
	}
	ooo := uint64(p.ooo())
	if uint64(at) > uint64(d.ctr)+ooo {
		d.prev = d.prev[:0]
	}
	for at > d.ctr+1 {
		i, k := d.nextKey()
		if uint64(i)+ooo >= uint64(at) {
			d.prev = binary.BigEndian.AppendUint32(d.prev, i)
			d.prev = append(d.prev, k...)
		}
	}
	d.histGC(p)
	_, k := d.nextKey()
	return k, nil
}

func (d *chainDir) histRemove(i int) {
	last := len(d.prev) - keyHistEntry
	if i < last {
		copy(d.prev[i:i+keyHistEntry], d.prev[last:])
	}
	d.prev = d.prev[:last]
}

// histGC drops keys more than maxOOOKeys behind the counter once the
// history has grown past its trim size.
func (d *chainDir) histGC(p chainParams) {
	if len(d.prev) < p.trimSize()*keyHistEntry || d.ctr < p.ooo() {
		return
	}
	horizon := d.ctr - p.ooo()
	for i := 0; i < len(d.prev); {
		if binary.BigEndian.Uint32(d.prev[i:]) < horizon {
			d.histRemove(i)
		} else {
			i += keyHistEntry
		}
	}
}

func (d *chainDir) histGet(at uint32, p chainParams) ([]byte, error) {
	if uint64(at)+uint64(p.ooo()) < uint64(d.ctr) {
		return nil, fmt.Errorf("%w: %d", ErrKeyTrimmed, at)
	}
	for i := 0; i+keyHistEntry <= len(d.prev); i += keyHistEntry {
		if binary.BigEndian.Uint32(d.prev[i:]) == at {
			k := append([]byte(nil), d.prev[i+4:i+keyHistEntry]...)
			d.histRemove(i)
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: %d", ErrKeyAlreadyRequested, at)
}
