package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Group commit: the sends of a node that arrive while a transaction
// commits wait and are stored together in the next one, with the
// acknowledgements that arrived meanwhile, so a burst of sends and acks
// costs one transaction and one fsync instead of one each. Each sender is
// answered only once its batch has committed.

// Batch bounds: a batch closes when it holds maxBatchSends sends or
// maxBatchEnvelopes envelopes (a large group send fills one alone).
const (
	maxBatchSends     = 128
	maxBatchEnvelopes = 4096
	maxBatchAcks      = 1000
)

// committer stores the node's sends in batches.
type committer struct {
	store Store
	// stored is told of every batch's stored envelopes, in Seq order,
	// before the senders are answered.
	stored func([]Stored)

	log     *slog.Logger
	metrics *metrics // nil: none

	mu     sync.RWMutex // held for reading while a send is queued
	closed bool
	ch     chan *commitRequest
	acks   chan []Ack
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
func newCommitter(store Store, workers int, log *slog.Logger, stored func([]Stored), m *metrics) *committer {
	c := &committer{store: store, stored: stored, log: log, metrics: m, ch: make(chan *commitRequest, maxBatchSends), acks: make(chan []Ack, 4096)}
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

// ack queues acknowledged envelopes for deletion with the next batch. It
// blocks while many are queued, which slows the acknowledging clients down
// rather than growing memory. Not after close.
func (c *committer) ack(acks []Ack) { c.acks <- acks }

// close stores what is queued (sends and acks), then stops the workers;
// enqueue refuses sends from then on.
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
	for {
		var batch []*commitRequest
		var acks []Ack
		envelopes := 0
		select {
		case r, ok := <-c.ch:
			if !ok {
				c.drainAcks()
				return
			}
			batch, envelopes = append(batch, r), r.req.Batch.envelopes()
		case a := <-c.acks:
			acks = a
		}
	gather:
		for len(batch) < maxBatchSends && envelopes < maxBatchEnvelopes && len(acks) < maxBatchAcks {
			select {
			case r, ok := <-c.ch:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				envelopes += r.req.Batch.envelopes()
			case a := <-c.acks:
				acks = append(acks, a...)
			default:
				break gather
			}
		}
		c.commit(batch, acks)
	}
}

// drainAcks deletes the acknowledgements still queued at close.
func (c *committer) drainAcks() {
	for {
		select {
		case a := <-c.acks:
			c.commit(nil, a)
		default:
			return
		}
	}
}

// commit stores one batch and answers its senders. A send whose caller
// gave up before its batch began is answered with its context's error and
// not stored. (The store bounds each transaction's time itself, so that a
// batch that timed out still leaves its requests their own attempt.)
func (c *committer) commit(batch []*commitRequest, acks []Ack) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- Result{Err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 && len(acks) == 0 {
		return
	}
	reqs := make([]Request, len(live))
	for i, r := range live {
		reqs[i] = r.req
	}
	start := time.Now()
	results, err := c.enqueueBatch(reqs, acks)
	c.metrics.committed(time.Since(start), len(reqs), len(acks), err)
	if err != nil {
		// Not deleted: the envelopes will be delivered again and the
		// devices de-duplicate them by id. Nothing is lost.
		c.log.Warn("delete acknowledged envelopes", "count", len(acks), "err", err)
	}
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

// enqueueBatch calls the store; a panic in it fails the batch's sends (its
// acks are delivered again later) instead of the node, and of leaving the
// senders waiting.
func (c *committer) enqueueBatch(reqs []Request, acks []Ack) (results []Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("storing a batch panicked", "panic", v, "stack", string(debug.Stack()))
			results = make([]Result, len(reqs))
			for i := range results {
				results[i].Err = fmt.Errorf("store: internal error")
			}
			err = errors.New("store: internal error")
		}
	}()
	return c.store.EnqueueBatch(context.Background(), reqs, acks)
}

// envelopes is how many envelopes b stores at most.
func (b MultiBatch) envelopes() int {
	n := 0
	for _, p := range b.Parts {
		n += len(p.Envelopes)
	}
	return n
}
