-- Each envelope's content length, with an index holding (device, size), so
-- a send measures the destination queues' length and bytes from the index
-- alone instead of reading every queued ciphertext.
ALTER TABLE envelopes ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE envelopes SET size = octet_length(content);
CREATE INDEX envelopes_queue_size ON envelopes (account_id, device_id, size);
