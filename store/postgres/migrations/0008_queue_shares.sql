-- One sending account's share of a device's queue is capped (relay.Config
-- QueueSenderMaxEnvelopes/Bytes). This index holds (device, sender, size),
-- so a send measures both the device's whole queue (a prefix range) and its
-- own share of it (a range no longer than the share) from the index alone.
-- It replaces envelopes_queue_size, which it covers, so an insert still
-- maintains the same number of indexes.
CREATE INDEX envelopes_queue_source ON envelopes (account_id, device_id, source_account, size);
DROP INDEX envelopes_queue_size;

-- The devices a send skipped for want of queue room, so that a retry with
-- the same idempotency key answers as the first request did:
-- "account:device:reason" items joined by ",", empty when none was skipped.
ALTER TABLE send_receipts ADD COLUMN skipped TEXT NOT NULL DEFAULT '';
