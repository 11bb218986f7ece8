-- O(1) queue accounting. A send used to measure the destination's queue
-- (count and bytes, and the sender's share of both) from the index
-- envelopes_queue_source: a range as long as the queue, 8.7 ms per send at
-- a depth of 10,000. The figures now live on the device row, which a send
-- locks anyway, and in queue_shares (one row per device and sending
-- account); sends add to them, acknowledgements and purges subtract what
-- they delete. queue_seq is the seq of the envelope queued last for the
-- device: a connection that has delivered up to it may take the next
-- envelope straight from the sender's commit without reading it back.
--
-- The counters are kept by parleyd from this version on: replicas of an
-- older version must be stopped before this migration runs (deploy/README.md).
-- The recount locks every device row until the migration commits, so sends
-- wait for it (a scan of the envelopes table).
ALTER TABLE devices ADD COLUMN queue_envelopes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN queue_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN queue_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE queue_shares (
    account_id     UUID    NOT NULL,
    device_id      INTEGER NOT NULL,
    source_account UUID    NOT NULL,
    envelopes      INTEGER NOT NULL,
    bytes          BIGINT  NOT NULL,
    PRIMARY KEY (account_id, source_account, device_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
);
-- Every send and acknowledgement updates these rows.
ALTER TABLE queue_shares SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

UPDATE devices d SET queue_envelopes = q.n, queue_bytes = q.bytes, queue_seq = q.last
    FROM (SELECT account_id, device_id, count(*) AS n, sum(size) AS bytes, max(seq) AS last
          FROM envelopes GROUP BY account_id, device_id) q
    WHERE d.account_id = q.account_id AND d.device_id = q.device_id;
INSERT INTO queue_shares (account_id, device_id, source_account, envelopes, bytes)
    SELECT account_id, device_id, source_account, count(*), sum(size) FROM envelopes GROUP BY account_id, device_id, source_account;

-- Nothing measures queues from the index any more; one index fewer to
-- maintain on every insert.
DROP INDEX IF EXISTS envelopes_queue_source;
