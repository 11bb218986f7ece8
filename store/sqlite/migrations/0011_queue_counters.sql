-- O(1) queue accounting. A send used to measure the destination's queue
-- (count and bytes, and the sender's share of both) from the index
-- envelopes_queue_source: a range as long as the queue, 3 ms per send at a
-- depth of 10,000. The figures now live on the device row, which a send
-- locks anyway, and in queue_shares (one row per device and sending
-- account); sends add to them, acknowledgements and purges subtract what
-- they delete. queue_seq is the seq of the envelope queued last for the
-- device: a connection that has delivered up to it may take the next
-- envelope straight from the sender's commit without reading it back.
--
-- The counters are kept by parleyd from this version on: replicas of an
-- older version must be stopped before this migration runs (deploy/README.md).
ALTER TABLE devices ADD COLUMN queue_envelopes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN queue_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN queue_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE queue_shares (
    account_id     TEXT    NOT NULL,
    device_id      INTEGER NOT NULL,
    source_account TEXT    NOT NULL CHECK (length(source_account) = 36),
    envelopes      INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    PRIMARY KEY (account_id, source_account, device_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

UPDATE devices SET
    queue_envelopes = (SELECT count(*) FROM envelopes e WHERE e.account_id = devices.account_id AND e.device_id = devices.device_id),
    queue_bytes = (SELECT coalesce(sum(e.size), 0) FROM envelopes e WHERE e.account_id = devices.account_id AND e.device_id = devices.device_id),
    queue_seq = (SELECT coalesce(max(e.seq), 0) FROM envelopes e WHERE e.account_id = devices.account_id AND e.device_id = devices.device_id);
INSERT INTO queue_shares (account_id, device_id, source_account, envelopes, bytes)
    SELECT account_id, device_id, source_account, count(*), sum(size) FROM envelopes GROUP BY account_id, device_id, source_account;

-- Nothing measures queues from the index any more; one index fewer to
-- maintain on every insert.
DROP INDEX envelopes_queue_source;
