package relay

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Group commit: the sends of a node that arrive while a transaction
// commits wait and are stored together in the next one, so a burst of
// sends costs one transaction and one fsync instead of one each. Each
// sender is answered only once its batch has committed.

// Batch bounds: a batch closes when it holds maxBatchSends sends or
// maxBatchEnvelopes envelopes (a large group send fills one alone).
const (
	maxBatchSends     = 128
	maxBatchEnvelopes = 4096
	// commitTimeout bounds one batch's transaction.
	commitTimeout = 30 * time.Second
)

// committer stores the node's sends in batches.
type committer struct {
	store Store
	// stored is told of every batch's stored envelopes, in Seq order,
	// before the senders are answered.
	stored func([]Stored)

	mu     sync.RWMutex // held for reading while a send is queued
	closed bool
	ch     chan *commitRequest
	wg     sync.WaitGroup
}

type commitRequest struct {
	ctx  context.Context
	req  Request
	done chan Result
}

// newCommitter starts workers goroutines that each take a batch, store it
// and answer its senders; several let one batch gather while another
// commits (PostgreSQL), one is enough where writes are serial (SQLite).
func newCommitter(store Store, workers int, stored func([]Stored)) *committer {
	c := &committer{store: store, stored: stored, ch: make(chan *commitRequest, maxBatchSends)}
	for range max(workers, 1) {
		c.wg.Go(c.run)
	}
	return c
}

// enqueue stores one send in the next batch and returns its result.
func (c *committer) enqueue(ctx context.Context, req Request) Result {
	r := &commitRequest{ctx: ctx, req: req, done: make(chan Result, 1)}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return Result{Err: ErrShuttingDown}
	}
	select {
	case c.ch <- r:
	case <-ctx.Done():
		c.mu.RUnlock()
		return Result{Err: ctx.Err()}
	}
	c.mu.RUnlock()
	// Once queued, the send is answered whatever the caller's context
	// does: it may be stored, and its charge must be settled either way.
	return <-r.done
}

// close stores what is queued, then stops the workers; enqueue refuses
// sends from then on.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.ch)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *committer) run() {
	for first := range c.ch {
		batch := []*commitRequest{first}
		envelopes := first.req.Batch.envelopes()
	gather:
		for len(batch) < maxBatchSends && envelopes < maxBatchEnvelopes {
			select {
			case r, ok := <-c.ch:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				envelopes += r.req.Batch.envelopes()
			default:
				break gather
			}
		}
		c.commit(batch)
	}
}

// commit stores one batch and answers its senders. A send whose caller
// gave up before its batch began is answered with its context's error and
// not stored.
func (c *committer) commit(batch []*commitRequest) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- Result{Err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	reqs := make([]Request, len(live))
	for i, r := range live {
		reqs[i] = r.req
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	results := c.store.EnqueueBatch(ctx, reqs)
	cancel()
	var stored []Stored
	for _, res := range results {
		stored = append(stored, res.Stored...)
	}
	if len(stored) > 0 {
		slices.SortFunc(stored, func(a, b Stored) int { return cmp.Compare(a.Envelope.Seq, b.Envelope.Seq) })
		c.stored(stored)
	}
	for i, r := range live {
		r.done <- results[i]
	}
}

// envelopes is how many envelopes b stores at most.
func (b MultiBatch) envelopes() int {
	n := 0
	for _, p := range b.Parts {
		n += len(p.Envelopes)
	}
	return n
}
