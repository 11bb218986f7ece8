-- parley:no-transaction
-- Runs outside a transaction so that the index is built CONCURRENTLY: a
-- plain CREATE INDEX holds a lock that stops every send (an INSERT into
-- envelopes) for as long as the build takes on a large queue. Every
-- statement may run again after a failure part-way: a failed concurrent
-- build leaves an invalid index, dropped by the first statement; a valid
-- one is kept, and the old index goes only once the new one is there.

-- One sending account's share of a device's queue is capped (relay.Config
-- QueueSenderMaxEnvelopes/Bytes). This index holds (device, sender, size),
-- so a send measures both the device's whole queue (a prefix range) and its
-- own share of it (a range no longer than the share) from the index alone.
-- It replaces envelopes_queue_size, which it covers, so an insert still
-- maintains the same number of indexes.
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('envelopes_queue_source') AND NOT indisvalid) THEN DROP INDEX envelopes_queue_source; END IF; END $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS envelopes_queue_source ON envelopes (account_id, device_id, source_account, size);
DROP INDEX CONCURRENTLY IF EXISTS envelopes_queue_size;

-- The devices a send skipped for want of queue room, so that a retry with
-- the same idempotency key answers as the first request did:
-- "account:device:reason" items joined by ",", empty when none was skipped.
-- (A column with a constant default is added without rewriting the table.)
ALTER TABLE send_receipts ADD COLUMN IF NOT EXISTS skipped TEXT NOT NULL DEFAULT '';
