package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/relay"
)

var _ relay.Store = (*DB)(nil)

// txTimeout bounds one transaction of the relay's queue (a batch, or one
// request of a batch that failed, each on its own).
const txTimeout = 30 * time.Second

// errKeyRace reports that a concurrent request with the same idempotency key
// committed first; the caller retries and finds its receipt.
var errKeyRace = errors.New("concurrent send with the same idempotency key")

// The relay's transactional statements, prepared once (see DB.warm).
const (
	qReceipt = `SELECT request_hash, server_ts, skipped FROM send_receipts
		WHERE account_id = $1 AND device_id = $2 AND key_hash = $3 AND expires_at > $4`
	qStoreReceipt = `INSERT INTO send_receipts (account_id, device_id, key_hash, request_hash, server_ts, expires_at, skipped)
		VALUES ($1, $2, $3, $4, $5, $6, $8)
		ON CONFLICT (account_id, device_id, key_hash) DO UPDATE SET
			request_hash = excluded.request_hash, server_ts = excluded.server_ts, expires_at = excluded.expires_at,
			skipped = excluded.skipped
		WHERE send_receipts.expires_at <= $7`
	// Sealed sends have no sending device: their keys stand alone.
	qSealedReceipt = `SELECT request_hash, server_ts, skipped FROM sealed_send_receipts
		WHERE key_hash = $1 AND expires_at > $2`
	qStoreSealedReceipt = `INSERT INTO sealed_send_receipts (key_hash, request_hash, server_ts, expires_at, skipped)
		VALUES ($1, $2, $3, $4, $6)
		ON CONFLICT (key_hash) DO UPDATE SET
			request_hash = excluded.request_hash, server_ts = excluded.server_ts, expires_at = excluded.expires_at,
			skipped = excluded.skipped
		WHERE sealed_send_receipts.expires_at <= $5`
)

// inSizes are the lengths IN lists are padded to (with repeats), so that
// PostgreSQL sees a handful of distinct statements, not one per length.
var inSizes = [...]int{1, 4, 16, 64, 256, 1000}

// pairSizes are the numbers of OR-ed pairs qShares is padded to (SQLite
// bounds an expression's depth at 1000).
var pairSizes = [...]int{1, 4, 16, 64}

// inChunks calls f for ids in order, in chunks padded to one of sizes
// (ascending): f gets the padded size and the chunk's arguments.
func inChunks[T any](sizes []int, ids []T, f func(n int, args []any)) {
	for len(ids) > 0 {
		n := sizes[len(sizes)-1]
		for _, size := range sizes {
			if size >= len(ids) {
				n = size
				break
			}
		}
		chunk := ids[:min(n, len(ids))]
		ids = ids[len(chunk):]
		args := make([]any, n)
		for i := range args {
			args[i] = chunk[min(i, len(chunk)-1)] // pad with a repeat
		}
		f(n, args)
	}
}

// qLockDevices reads (and, with the dialect's LockRows, locks) the devices
// of n accounts with their queue counters, in key order, the order every
// writer of queue counters locks them in, so writers cannot deadlock.
func buildLockDevices(n int, lock string) string {
	return `SELECT account_id, device_id, registration_id, queue_envelopes, queue_bytes, queue_seq FROM devices
		WHERE account_id IN (` + placeholders(1, n) + `) ORDER BY account_id, device_id` + lock
}

// qShares reads the queue shares of n (destination account, sending
// account) pairs, across the destination's devices.
func buildShares(n int) string {
	var b strings.Builder
	b.WriteString(`SELECT account_id, device_id, source_account, envelopes, bytes FROM queue_shares WHERE `)
	for i := range n {
		if i > 0 {
			b.WriteString(" OR ")
		}
		fmt.Fprintf(&b, "(account_id = $%d AND source_account = $%d)", 2*i+1, 2*i+2)
	}
	return b.String()
}

// qCountQueues adds to the counters of n devices' queues in one statement
// (for each i, $5i+1 account, $5i+2 device, $5i+3 envelopes, $5i+4 bytes,
// $5i+5 the last seq queued, 0 if none), the same SQL on both engines.
func buildCountQueues(n int) string {
	var when, where strings.Builder
	for i := range n {
		p := 5*i + 1
		match := fmt.Sprintf("account_id = $%d AND device_id = $%d", p, p+1)
		if i > 0 {
			where.WriteString(" OR ")
		}
		where.WriteString("(" + match + ")")
		fmt.Fprintf(&when, " WHEN %s THEN %%s", match)
	}
	arm := func(col int) string {
		args := make([]any, n)
		for i := range args {
			args[i] = fmt.Sprintf("$%d", 5*i+col)
		}
		// The ELSE gives the arms their type on PostgreSQL.
		return fmt.Sprintf("CASE"+when.String()+" ELSE CAST(0 AS BIGINT) END", args...)
	}
	seq := make([]any, n)
	for i := range seq {
		seq[i] = fmt.Sprintf("CASE WHEN $%d > queue_seq THEN $%d ELSE queue_seq END", 5*i+5, 5*i+5)
	}
	return `UPDATE devices SET queue_envelopes = queue_envelopes + ` + arm(3) + `, queue_bytes = queue_bytes + ` + arm(4) +
		`, queue_seq = ` + fmt.Sprintf("CASE"+when.String()+" END", seq...) + ` WHERE ` + where.String()
}

// queueChange is what a transaction adds to one queue's counters.
type queueChange struct {
	queueKey
	n, bytes, seq int64
}

// countQueuesStmts updates the queues' counters by changes, in key order.
func countQueuesStmts(changes []queueChange) []Statement {
	slices.SortFunc(changes, func(a, b queueChange) int { return compareQueues(a.queueKey, b.queueKey) })
	var stmts []Statement
	inChunks(pairSizes[:], changes, func(n int, padded []any) {
		args := make([]any, 0, 5*n)
		for _, c := range padded {
			c := c.(queueChange)
			args = append(args, c.account.String(), c.device, c.n, c.bytes, c.seq)
		}
		stmts = append(stmts, Statement{Query: qCountQueues(n), Args: args})
	})
	return stmts
}

// qCountShares adds to n queue shares (rows are created as needed).
func buildCountShares(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO queue_shares (account_id, device_id, source_account, envelopes, bytes) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(" + placeholders(i*5+1, 5) + ")")
	}
	b.WriteString(` ON CONFLICT (account_id, source_account, device_id) DO UPDATE SET
		envelopes = queue_shares.envelopes + excluded.envelopes, bytes = queue_shares.bytes + excluded.bytes`)
	return b.String()
}

// rowChunks cuts n rows into multi-row statements of insertSizes rows,
// calling f with each chunk's first row and size.
func rowChunks(n int, f func(from, size int)) {
	for from := 0; from < n; {
		size := insertSizes[len(insertSizes)-1]
		for _, s := range insertSizes {
			if s <= n-from {
				size = s
				break
			}
		}
		f(from, size)
		from += size
	}
}

// envelopeColumns are the columns an insert fills, in order.
const envelopeColumns = `id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size, content_id`

// contentStmt keeps a ciphertext several envelopes share; its id goes to id.
func contentStmt(content []byte, id *int64) Statement {
	return Statement{Query: `INSERT INTO envelope_contents (content) VALUES ($1) RETURNING id`, Args: []any{content},
		Scan: func(r Row) error { return r.Scan(id) }}
}

// insertSizes are the row counts of the multi-row inserts (and upserts) a
// batch is cut into, largest first: powers of two, so n rows take at most
// one statement per bit of n below 64 (15 rows: 8+4+2+1).
var insertSizes = [...]int{64, 32, 16, 8, 4, 2, 1}

// qInsertEnvelopes inserts n envelopes and returns their seq and id.
func buildInsertEnvelopes(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO envelopes (` + envelopeColumns + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(" + placeholders(i*13+1, 13) + ")")
	}
	b.WriteString(` RETURNING seq, id`)
	return b.String()
}

// sealedSource is the source account under which sealed envelopes (no
// source) count in queue_shares: all sealed senders share one share of a
// device's queue.
const sealedSource = "00000000-0000-0000-0000-000000000000"

// scanShare reads a row that starts (account, device, source account)
// into k, and the rest into more.
func scanShare(rows Row, k *shareKey, more ...any) error {
	var account, source string
	if err := rows.Scan(append([]any{&account, &k.device, &source}, more...)...); err != nil {
		return err
	}
	var err error
	if k.account, err = uuid.Parse(account); err != nil {
		return err
	}
	k.source, err = uuid.Parse(source)
	return err
}

func buildDeleteEnvelopes(n int) string {
	return `DELETE FROM envelopes WHERE seq IN (` + placeholders(1, n) + `) RETURNING account_id, device_id, coalesce(source_account, '` + sealedSource + `'), size`
}

// Enqueue stores a single-destination send (a batch of one request); the
// relay itself calls EnqueueBatch.
func (db *DB) Enqueue(ctx context.Context, b relay.Batch, check func([]accounts.Device) error) (relay.Receipt, error) {
	return db.EnqueueMulti(ctx, b.Multi(), func(devs map[uuid.UUID][]accounts.Device) error { return check(devs[b.Destination]) })
}

// EnqueueMulti stores a multi-recipient send (a batch of one request).
func (db *DB) EnqueueMulti(ctx context.Context, b relay.MultiBatch, check func(map[uuid.UUID][]accounts.Device) error) (relay.Receipt, error) {
	res, _ := db.EnqueueBatch(ctx, []relay.Request{{Batch: b, Check: check}}, nil)
	return res[0].Receipt, res[0].Err
}

// EnqueueBatch implements relay.Store: the whole batch in one transaction;
// if that fails (a database error, or two requests racing for one
// idempotency key), the acks and then each request again in a transaction
// of its own, so that only the failing one fails.
func (db *DB) EnqueueBatch(ctx context.Context, reqs []relay.Request, acks []relay.Ack) ([]relay.Result, error) {
	if len(reqs)+min(len(acks), 1) > 1 {
		if results, retry, err := db.enqueueTx(ctx, reqs, acks); err == nil {
			for _, i := range retry {
				results[i] = db.enqueueOne(ctx, reqs[i])
			}
			return results, nil
		}
	}
	var err error
	if len(acks) > 0 {
		err = db.Delete(ctx, acks)
	}
	results := make([]relay.Result, len(reqs))
	for i, r := range reqs {
		results[i] = db.enqueueOne(ctx, r)
	}
	return results, err
}

// enqueueOne stores one request in its own transaction, once more if a
// concurrent request with its idempotency key committed first (the retry
// finds that one's receipt).
func (db *DB) enqueueOne(ctx context.Context, r relay.Request) relay.Result {
	for attempt := 0; ; attempt++ {
		results, _, err := db.enqueueTx(ctx, []relay.Request{r}, nil)
		switch {
		case err == nil:
			return results[0]
		case errors.Is(err, errKeyRace) && attempt == 0:
			continue
		default:
			return relay.Result{Err: err}
		}
	}
}

// queueKey names one device's queue; shareKey one sender's part of it.
type queueKey struct {
	account uuid.UUID
	device  int
}

type shareKey struct {
	queueKey
	source uuid.UUID
}

// queueState is a device's row as a batch found it, plus what the batch
// adds to it.
type queueState struct {
	registrationID int
	queueUsage
	seq    int64 // queue_seq
	stored []int // indexes into the batch's inserts
}

// queueUsage is a queue's (or share's) envelopes and bytes.
type queueUsage struct{ n, bytes int64 }

// pendingInsert is one envelope a batch stores.
type pendingInsert struct {
	request int
	account uuid.UUID
	env     relay.Envelope
	// content is the envelope_contents row holding the ciphertext the
	// request's envelopes share (0: the envelope holds its own).
	content int64
}

// enqueueTx runs reqs in one transaction. A request refused on its merits
// (its check, full queues, a used key) is answered in its Result without
// failing the others; a database error fails the transaction. It returns
// the indexes of requests to run again on their own, after it committed:
// those repeating an idempotency key of an earlier request of the batch.
//
// The transaction is three rounds of statements (four with shared
// contents), whatever the batch's size: lock and read, then insert, then
// count.
func (db *DB) enqueueTx(ctx context.Context, reqs []relay.Request, acks []relay.Ack) ([]relay.Result, []int, error) {
	ctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	var results []relay.Result
	var retry []int
	err := db.queueTx(ctx, func(q QueueTx) error {
		results, retry = make([]relay.Result, len(reqs)), nil
		// Round 1: lock the devices of every destination and every
		// acknowledging device (in key order), delete the acknowledged
		// envelopes, read the senders' shares, look up the keys.
		queues := make(map[queueKey]*queueState)
		removed := make(map[shareKey]queueUsage) // by the acks, counted with the inserts
		shares := make(map[shareKey]queueUsage)
		var accts []uuid.UUID
		for _, r := range reqs {
			for _, p := range r.Batch.Parts {
				accts = append(accts, p.Destination)
			}
		}
		for _, a := range acks {
			accts = append(accts, a.Account)
		}
		stmts := db.lockStmts(accts, queues)
		stmts = append(stmts, deleteStmts(acks, removed)...)
		stmts = append(stmts, shareStmts(reqs, shares)...)
		type keyID struct {
			sender accounts.Principal
			key    string
		}
		keys := map[keyID]bool{}
		found := make([]*receiptRow, len(reqs))
		for i, r := range reqs {
			if r.Batch.Key == nil {
				continue
			}
			k := keyID{r.Batch.Sender, string(r.Batch.Key)}
			if keys[k] {
				retry = append(retry, i)
				continue
			}
			keys[k] = true
			found[i] = &receiptRow{}
			stmts = append(stmts, found[i].lookup(r.Batch))
		}
		if err := q.Run(ctx, stmts...); err != nil {
			return fmt.Errorf("read queues: %w", err)
		}
		for k, u := range removed {
			if q := queues[k.queueKey]; q != nil {
				q.n, q.bytes = q.n-u.n, q.bytes-u.bytes
			}
		}
		byAccount := make(map[uuid.UUID][]accounts.Device)
		for k, q := range queues {
			byAccount[k.account] = append(byAccount[k.account], accounts.Device{ID: k.device, RegistrationID: q.registrationID})
		}
		for _, devs := range byAccount {
			slices.SortFunc(devs, func(a, b accounts.Device) int { return cmp.Compare(a.ID, b.ID) })
		}
		var inserts []pendingInsert
		var receipts []int // requests whose receipt to store
		var shared []int   // first insert of each request sharing its content
		for i, r := range reqs {
			b := r.Batch
			if b.Key != nil && found[i] == nil {
				continue // retried after the batch
			}
			if rr := found[i]; rr != nil && rr.found {
				results[i] = rr.result(b)
				continue
			}
			devices := make(map[uuid.UUID][]accounts.Device, len(b.Parts))
			for _, p := range b.Parts {
				devices[p.Destination] = byAccount[p.Destination]
			}
			if err := r.Check(devices); err != nil {
				results[i].Err = err
				continue
			}
			if err := addressable(b, queues); err != nil {
				results[i].Err = err
				continue
			}
			skipped, stored := skippedDevices(b, queues, shares), 0
			for _, p := range b.Parts {
				stored += len(p.Envelopes)
			}
			if stored == len(skipped) {
				full := &relay.QueueFullError{Account: skipped[0].Account}
				for _, sk := range skipped {
					if sk.Account == full.Account {
						full.Devices = append(full.Devices, sk.Device)
					}
				}
				results[i].Err = full
				continue
			}
			first := len(inserts) // this request's inserts start here
			skip := make(map[queueKey]bool, len(skipped))
			for _, sk := range skipped {
				skip[queueKey{sk.Account, sk.Device}] = true
			}
			for _, p := range b.Parts {
				for _, e := range p.Envelopes {
					qk := queueKey{p.Destination, e.DestDevice}
					if skip[qk] {
						continue
					}
					size := int64(len(e.Content))
					q := queues[qk]
					q.n, q.bytes = q.n+1, q.bytes+size
					sh := shares[shareKey{qk, e.SourceAccount}]
					shares[shareKey{qk, e.SourceAccount}] = queueUsage{sh.n + 1, sh.bytes + size}
					inserts = append(inserts, pendingInsert{request: i, account: p.Destination, env: e})
				}
			}
			if b.SharedContent && len(inserts)-first > 1 {
				shared = append(shared, first)
			}
			results[i].Receipt = relay.Receipt{ServerTimestamp: b.Now, Skipped: skipped}
			if b.Key != nil {
				receipts = append(receipts, i)
			}
		}
		// Round 2 (only for multi-recipient sends): the shared contents,
		// whose ids the envelopes then point at.
		if len(shared) > 0 {
			ids := make([]int64, len(shared))
			stmts = stmts[:0]
			for j, first := range shared {
				stmts = append(stmts, contentStmt(inserts[first].env.Content, &ids[j]))
			}
			if err := q.Run(ctx, stmts...); err != nil {
				return fmt.Errorf("store shared contents: %w", err)
			}
			for j, first := range shared {
				for k := first; k < len(inserts) && inserts[k].request == inserts[first].request; k++ {
					inserts[k].content = ids[j]
				}
			}
		}
		// Round 3: the envelopes.
		if err := q.Run(ctx, insertStmts(inserts)...); err != nil {
			return fmt.Errorf("store envelopes: %w", err)
		}
		last := chain(inserts, queues)
		// Round 4: counters, shares and receipts (in the senders' key
		// order, like every other row lock here).
		stmts = countStmts(inserts, last, removed)
		slices.SortFunc(receipts, func(x, y int) int {
			a, b := reqs[x].Batch.Sender, reqs[y].Batch.Sender
			if c := bytes.Compare(a.Account[:], b.Account[:]); c != 0 {
				return c
			}
			return cmp.Compare(a.Device, b.Device)
		})
		affected := make([]int64, len(receipts))
		for j, i := range receipts {
			stmts = append(stmts, storeReceiptStmt(reqs[i].Batch, results[i].Receipt.Skipped, &affected[j]))
		}
		if err := q.Run(ctx, stmts...); err != nil {
			return fmt.Errorf("count queues: %w", err)
		}
		for _, n := range affected {
			if n == 0 {
				// A live receipt: a concurrent request with this key
				// committed first.
				return errKeyRace
			}
		}
		for _, in := range inserts {
			results[in.request].Stored = append(results[in.request].Stored, relay.Stored{Account: in.account, Envelope: in.env})
		}
		return nil
	})
	return results, retry, err
}

// receiptRow is an idempotency key's stored answer, if found.
type receiptRow struct {
	found       bool
	requestHash []byte
	serverTS    int64
	skipped     string
}

// lookup reads the first answer to a send with b's idempotency key.
func (rr *receiptRow) lookup(b relay.MultiBatch) Statement {
	q, args := qReceipt, []any{b.Sender.Account.String(), b.Sender.Device, b.Key, ms(b.Now)}
	if b.Sender.Account == uuid.Nil {
		q, args = qSealedReceipt, []any{b.Key, ms(b.Now)}
	}
	return Statement{Query: q, Args: args,
		Scan: func(r Row) error {
			rr.found = true
			return r.Scan(&rr.requestHash, &rr.serverTS, &rr.skipped)
		}}
}

// result is the answer to a retry of b: the first answer, replayed, or
// ErrIdempotencyKeyUsed when the key came with a different request.
func (rr *receiptRow) result(b relay.MultiBatch) relay.Result {
	if !bytes.Equal(rr.requestHash, b.RequestHash) {
		return relay.Result{Err: relay.ErrIdempotencyKeyUsed}
	}
	rc := relay.Receipt{ServerTimestamp: fromMS(rr.serverTS), Replayed: true}
	var err error
	rc.Skipped, err = decodeSkipped(rr.skipped)
	return relay.Result{Receipt: rc, Err: err}
}

// storeReceiptStmt remembers a send's answer under its idempotency key. It
// replaces only an expired receipt: 0 rows affected means a concurrent
// request with this key committed first.
func storeReceiptStmt(b relay.MultiBatch, skipped []relay.Skipped, affected *int64) Statement {
	if b.Sender.Account == uuid.Nil { // a sealed send
		return Statement{Query: qStoreSealedReceipt, Args: []any{b.Key, b.RequestHash, ms(b.Now), ms(b.KeyExpires), ms(b.Now),
			encodeSkipped(skipped)}, RowsAffected: affected}
	}
	return Statement{Query: qStoreReceipt, Args: []any{b.Sender.Account.String(), b.Sender.Device, b.Key, b.RequestHash, ms(b.Now),
		ms(b.KeyExpires), ms(b.Now), encodeSkipped(skipped)}, RowsAffected: affected}
}

// lockStmts read and lock the devices of accts, in key order, into queues.
func (db *DB) lockStmts(accts []uuid.UUID, queues map[queueKey]*queueState) []Statement {
	accts = slices.Clone(accts) // the caller's order stays
	slices.SortFunc(accts, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	accts = slices.Compact(accts)
	ids := make([]string, len(accts))
	for i, a := range accts {
		ids[i] = a.String()
	}
	var stmts []Statement
	inChunks(inSizes[:], ids, func(n int, args []any) {
		stmts = append(stmts, Statement{Query: db.qLockDevices(n), Args: args, Scan: func(r Row) error {
			var account string
			var device int
			q := &queueState{}
			if err := r.Scan(&account, &device, &q.registrationID, &q.n, &q.bytes, &q.seq); err != nil {
				return err
			}
			a, err := uuid.Parse(account)
			if err != nil {
				return err
			}
			queues[queueKey{a, device}] = q
			return nil
		}})
	})
	return stmts
}

// shareStmts read the senders' shares of the destinations' queues into
// shares.
func shareStmts(reqs []relay.Request, shares map[shareKey]queueUsage) []Statement {
	type pair struct{ dest, src uuid.UUID }
	var pairs []pair
	seen := map[pair]bool{}
	for _, r := range reqs {
		for _, p := range r.Batch.Parts {
			k := pair{p.Destination, r.Batch.Sender.Account}
			if k.dest != k.src && !seen[k] {
				seen[k] = true
				pairs = append(pairs, k)
			}
		}
	}
	var stmts []Statement
	inChunks(pairSizes[:], pairs, func(n int, args []any) {
		flat := make([]any, 0, 2*n)
		for _, a := range args {
			p := a.(pair)
			flat = append(flat, p.dest.String(), p.src.String())
		}
		stmts = append(stmts, Statement{Query: qShares(n), Args: flat, Scan: func(r Row) error {
			var k shareKey
			var u queueUsage
			if err := scanShare(r, &k, &u.n, &u.bytes); err != nil {
				return err
			}
			shares[k] = u
			return nil
		}})
	})
	return stmts
}

// insertStmts store a batch's envelopes and set each one's Seq.
func insertStmts(inserts []pendingInsert) []Statement {
	byID := make(map[string]int, len(inserts))
	for i, in := range inserts {
		byID[in.env.ID.String()] = i
	}
	var stmts []Statement
	rowChunks(len(inserts), func(from, n int) {
		args := make([]any, 0, n*13)
		for _, in := range inserts[from : from+n] {
			e := in.env
			var content []byte
			var contentID *int64
			if in.content != 0 {
				contentID = &in.content
			} else {
				content = e.Content
			}
			var source any
			var sourceDevice any
			if e.SourceAccount != uuid.Nil { // sealed envelopes have no source
				source, sourceDevice = e.SourceAccount.String(), e.SourceDevice
			}
			args = append(args, e.ID.String(), in.account.String(), e.DestDevice, e.Type, source,
				sourceDevice, e.ClientTimestamp, ms(e.ServerTimestamp), ms(e.ExpiresAt), e.Urgent, content, len(e.Content), contentID)
		}
		stmts = append(stmts, Statement{Query: qInsertEnvelopes(n), Args: args, Scan: func(r Row) error {
			var seq int64
			var id string
			if err := r.Scan(&seq, &id); err != nil {
				return err
			}
			i, ok := byID[id]
			if !ok {
				return fmt.Errorf("unexpected id %q returned", id)
			}
			inserts[i].env.Seq = seq
			return nil
		}})
	})
	return stmts
}

// chain sets each new envelope's Prev, chaining each device's new
// envelopes after what it held, in seq order, and returns the seq each
// queue now ends at.
func chain(inserts []pendingInsert, queues map[queueKey]*queueState) map[queueKey]int64 {
	for i, in := range inserts {
		q := queues[queueKey{in.account, in.env.DestDevice}]
		q.stored = append(q.stored, i)
	}
	last := make(map[queueKey]int64)
	for k, q := range queues {
		if len(q.stored) == 0 {
			continue
		}
		slices.SortFunc(q.stored, func(a, b int) int { return cmp.Compare(inserts[a].env.Seq, inserts[b].env.Seq) })
		prev := q.seq
		for _, i := range q.stored {
			inserts[i].env.Prev, prev = prev, inserts[i].env.Seq
		}
		last[k] = prev
	}
	return last
}

// countStmts apply what a transaction did to the queues' counters and
// shares: the envelopes it inserted (and the seq each queue now ends at)
// minus those it deleted (removed, by sender), in one statement for each
// table (for up to 64 queues).
func countStmts(inserts []pendingInsert, last map[queueKey]int64, removed map[shareKey]queueUsage) []Statement {
	changes := make(map[queueKey]queueChange)
	shares := make(map[shareKey]queueUsage)
	add := func(k shareKey, n, bytes int64) {
		c := changes[k.queueKey]
		c.queueKey, c.n, c.bytes = k.queueKey, c.n+n, c.bytes+bytes
		changes[k.queueKey] = c
		u := shares[k]
		shares[k] = queueUsage{u.n + n, u.bytes + bytes}
	}
	for _, in := range inserts {
		add(shareKey{queueKey{in.account, in.env.DestDevice}, in.env.SourceAccount}, 1, int64(len(in.env.Content)))
	}
	for k, u := range removed {
		add(k, -u.n, -u.bytes)
	}
	for k, seq := range last {
		c := changes[k]
		c.seq = seq
		changes[k] = c
	}
	return append(countQueuesStmts(slices.Collect(maps.Values(changes))), addSharesStmts(shares)...)
}

// addSharesStmts add usage (negative to subtract) to queue shares, in key
// order.
func addSharesStmts(added map[shareKey]queueUsage) []Statement {
	keys := make([]shareKey, 0, len(added))
	for k := range added {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b shareKey) int {
		if c := compareQueues(a.queueKey, b.queueKey); c != 0 {
			return c
		}
		return bytes.Compare(a.source[:], b.source[:])
	})
	var stmts []Statement
	rowChunks(len(keys), func(from, n int) {
		args := make([]any, 0, 5*n)
		for _, k := range keys[from : from+n] {
			u := added[k]
			args = append(args, k.account.String(), k.device, k.source.String(), u.n, u.bytes)
		}
		stmts = append(stmts, Statement{Query: qCountShares(n), Args: args})
	})
	return stmts
}

func compareQueues(a, b queueKey) int {
	if c := bytes.Compare(a.account[:], b.account[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.device, b.device)
}

// addressable checks that every envelope of b is for an existing device
// (a check is expected to ensure it; the foreign key would refuse it).
func addressable(b relay.MultiBatch, queues map[queueKey]*queueState) error {
	for _, p := range b.Parts {
		for _, e := range p.Envelopes {
			if queues[queueKey{p.Destination, e.DestDevice}] == nil {
				return fmt.Errorf("store envelope: %w: device %d of %s", relay.ErrNoAccount, e.DestDevice, p.Destination)
			}
		}
	}
	return nil
}

// skippedDevices lists the devices of b whose queue has no room for their
// envelope: SkipQueueFull when the whole queue would pass a cap,
// SkipSenderShare when the sender's part would (other accounts only).
func skippedDevices(b relay.MultiBatch, queues map[queueKey]*queueState, shares map[shareKey]queueUsage) []relay.Skipped {
	over := func(u queueUsage, maxN int, maxBytes int64, size int) bool {
		return (maxN > 0 && u.n+1 > int64(maxN)) || (maxBytes > 0 && u.bytes+int64(size) > maxBytes)
	}
	var skipped []relay.Skipped
	for _, p := range b.Parts {
		for _, e := range p.Envelopes {
			qk := queueKey{p.Destination, e.DestDevice}
			switch {
			case over(queues[qk].queueUsage, b.QueueMaxEnvelopes, b.QueueMaxBytes, len(e.Content)):
				skipped = append(skipped, relay.Skipped{Account: p.Destination, Device: e.DestDevice, Reason: relay.SkipQueueFull})
			case p.Destination != b.Sender.Account &&
				over(shares[shareKey{qk, b.Sender.Account}], b.QueueSenderMaxEnvelopes, b.QueueSenderMaxBytes, len(e.Content)):
				skipped = append(skipped, relay.Skipped{Account: p.Destination, Device: e.DestDevice, Reason: relay.SkipSenderShare})
			}
		}
	}
	return skipped
}

// encodeSkipped is the send_receipts.skipped column: "account:device:reason"
// items joined by ",".
func encodeSkipped(skipped []relay.Skipped) string {
	var b strings.Builder
	for i, sk := range skipped {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d:%s", sk.Account, sk.Device, sk.Reason)
	}
	return b.String()
}

// decodeSkipped parses what encodeSkipped wrote.
func decodeSkipped(s string) ([]relay.Skipped, error) {
	if s == "" {
		return nil, nil
	}
	var out []relay.Skipped
	for item := range strings.SplitSeq(s, ",") {
		parts := strings.Split(item, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("read idempotency key: bad skipped device %q", item)
		}
		account, err := uuid.Parse(parts[0])
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: skipped device %q: %w", item, err)
		}
		device, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: skipped device %q: %w", item, err)
		}
		out = append(out, relay.Skipped{Account: account, Device: device, Reason: relay.SkipReason(parts[2])})
	}
	return out, nil
}

// Pending implements relay.Store.
func (db *DB) Pending(ctx context.Context, account uuid.UUID, device int, after int64, now time.Time, limit int) ([]relay.Envelope, error) {
	st, err := db.prepared(ctx, db.r, `SELECT e.seq, e.id, e.type, e.source_account, e.source_device, e.client_ts, e.server_ts, e.expires_at, e.urgent,
			coalesce(e.content, c.content)
		FROM envelopes e LEFT JOIN envelope_contents c ON c.id = e.content_id
		WHERE e.account_id = $1 AND e.device_id = $2 AND e.seq > $3 AND e.expires_at > $4 ORDER BY e.seq LIMIT $5`)
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	rows, err := st.QueryContext(ctx, account.String(), device, after, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	defer rows.Close()
	var out []relay.Envelope
	for rows.Next() {
		e := relay.Envelope{DestDevice: device}
		var id string
		var src sql.NullString
		var srcDevice sql.NullInt64
		var server, expires int64
		if err := rows.Scan(&e.Seq, &id, &e.Type, &src, &srcDevice, &e.ClientTimestamp, &server, &expires, &e.Urgent, &e.Content); err != nil {
			return nil, fmt.Errorf("read queue: %w", err)
		}
		if e.ID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("read queue: envelope id: %w", err)
		}
		if src.Valid { // else sealed: no source
			if e.SourceAccount, err = uuid.Parse(src.String); err != nil {
				return nil, fmt.Errorf("read queue: source: %w", err)
			}
			e.SourceDevice = int(srcDevice.Int64)
		}
		e.ServerTimestamp, e.ExpiresAt = fromMS(server), fromMS(expires)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Delete deletes acknowledged envelopes on their own (the relay deletes
// them with its next batch of sends); unknown ones are ignored.
func (db *DB) Delete(ctx context.Context, acks []relay.Ack) error {
	if len(acks) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	err := db.queueTx(ctx, func(q QueueTx) error {
		_, err := db.deleteQueued(ctx, q, acks)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete acknowledged envelopes: %w", err)
	}
	return nil
}

// deleteQueued deletes envelopes (by Seq, under their accounts' device
// locks) and takes them off their queues' counters; it returns how many
// it deleted.
func (db *DB) deleteQueued(ctx context.Context, q QueueTx, acks []relay.Ack) (int, error) {
	accts := make([]uuid.UUID, len(acks))
	for i, a := range acks {
		accts[i] = a.Account
	}
	removed := make(map[shareKey]queueUsage)
	if err := q.Run(ctx, append(db.lockStmts(accts, map[queueKey]*queueState{}), deleteStmts(acks, removed)...)...); err != nil {
		return 0, err
	}
	n := 0
	for _, u := range removed {
		n += int(u.n)
	}
	return n, q.Run(ctx, countStmts(nil, nil, removed)...)
}

// deleteStmts delete acknowledged or expired envelopes by seq and record
// what left each queue, by sender, in removed. The devices of every
// account in acks must be locked before them (the ack's Device is not
// needed to find the row).
func deleteStmts(acks []relay.Ack, removed map[shareKey]queueUsage) []Statement {
	seqs := make([]int64, len(acks))
	for i, a := range acks {
		seqs[i] = a.Seq
	}
	var stmts []Statement
	inChunks(inSizes[:], seqs, func(n int, args []any) {
		stmts = append(stmts, Statement{Query: qDeleteEnvelopes(n), Args: args, Scan: func(r Row) error {
			var k shareKey
			var size int64
			if err := scanShare(r, &k, &size); err != nil {
				return err
			}
			u := removed[k]
			removed[k] = queueUsage{u.n + 1, u.bytes + size}
			return nil
		}})
	})
	return stmts
}

// placeholders is "$from,…,$(from+n-1)".
func placeholders(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		if i > from {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

// PurgeExpired implements relay.Store.
func (db *DB) PurgeExpired(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := db.queueTx(ctx, func(q QueueTx) error {
		var expired []relay.Ack
		err := q.Run(ctx, Statement{Query: `SELECT seq, account_id FROM envelopes WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2`,
			Args: []any{ms(now), limit}, Scan: func(r Row) error {
				var a relay.Ack
				var account string
				if err := r.Scan(&a.Seq, &account); err != nil {
					return err
				}
				var err error
				a.Account, err = uuid.Parse(account)
				expired = append(expired, a)
				return err
			}})
		if err != nil || len(expired) == 0 {
			return err
		}
		n, err = db.deleteQueued(ctx, q, expired)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge expired envelopes: %w", err)
	}
	for _, table := range []string{"send_receipts", "sealed_send_receipts"} {
		if _, err := db.w.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires_at <= $1`, ms(now)); err != nil {
			return n, fmt.Errorf("purge idempotency keys: %w", err)
		}
	}
	// Shared contents no envelope points at any more (all acknowledged,
	// purged, or their devices removed).
	if _, err := db.w.ExecContext(ctx, `DELETE FROM envelope_contents WHERE NOT EXISTS
		(SELECT 1 FROM envelopes e WHERE e.content_id = envelope_contents.id)`); err != nil {
		return n, fmt.Errorf("purge shared contents: %w", err)
	}
	// Shares of queues that emptied (a send adds the row again), under
	// their devices' locks, taken in the usual order.
	err = db.queueTx(ctx, func(q QueueTx) error {
		var accts []uuid.UUID
		err := q.Run(ctx, Statement{Query: `SELECT DISTINCT account_id FROM queue_shares WHERE envelopes <= 0 LIMIT 1000`, Scan: func(r Row) error {
			var account string
			if err := r.Scan(&account); err != nil {
				return err
			}
			a, err := uuid.Parse(account)
			accts = append(accts, a)
			return err
		}})
		if err != nil || len(accts) == 0 {
			return err
		}
		stmts := db.lockStmts(accts, map[queueKey]*queueState{})
		inChunks(inSizes[:], accts, func(n int, args []any) {
			for i, a := range args {
				args[i] = a.(uuid.UUID).String()
			}
			stmts = append(stmts, Statement{Query: `DELETE FROM queue_shares WHERE envelopes <= 0 AND account_id IN (` + placeholders(1, n) + `)`, Args: args})
		})
		return q.Run(ctx, stmts...)
	})
	if err != nil {
		return n, fmt.Errorf("purge queue shares: %w", err)
	}
	return n, nil
}

// The statements of the queue's hot path, built once for each size they
// are used at (a CASE of 64 arms or an insert of 64 rows is not built
// for every batch). Read-only after package initialisation.
var (
	textShares      = buildEach(pairSizes[:], buildShares)
	textCountQueues = buildEach(pairSizes[:], buildCountQueues)
	textCountShares = buildEach(insertSizes[:], buildCountShares)
	textInsert      = buildEach(insertSizes[:], buildInsertEnvelopes)
	textDelete      = buildEach(inSizes[:], buildDeleteEnvelopes)
)

// buildEach builds a statement for each size.
func buildEach(sizes []int, build func(int) string) map[int]string {
	m := make(map[int]string, len(sizes))
	for _, n := range sizes {
		m[n] = build(n)
	}
	return m
}

// sized is texts[n], or build(n) for a size not built in advance.
func sized(texts map[int]string, n int, build func(int) string) string {
	if q, ok := texts[n]; ok {
		return q
	}
	return build(n)
}

func qShares(n int) string          { return sized(textShares, n, buildShares) }
func qCountQueues(n int) string     { return sized(textCountQueues, n, buildCountQueues) }
func qCountShares(n int) string     { return sized(textCountShares, n, buildCountShares) }
func qInsertEnvelopes(n int) string { return sized(textInsert, n, buildInsertEnvelopes) }
func qDeleteEnvelopes(n int) string { return sized(textDelete, n, buildDeleteEnvelopes) }

// qLockDevices is the lock statement for n accounts, built once per size
// for the database's dialect (see New).
func (db *DB) qLockDevices(n int) string {
	return sized(db.lockTexts, n, func(n int) string { return buildLockDevices(n, db.d.LockRows) })
}
