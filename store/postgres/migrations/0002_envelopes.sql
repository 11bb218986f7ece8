-- Per-device queues of opaque ciphertext envelopes. seq orders a device's
-- queue; senders to one device serialise on its devices row, so seq order is
-- commit order per device. expires_at is fixed when the envelope is stored:
-- the sender's expiry or the relay's maximum retention, whichever comes
-- first. Times are Unix milliseconds.
CREATE TABLE envelopes (
    seq            BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             UUID     NOT NULL,
    account_id     UUID     NOT NULL,
    device_id      INTEGER  NOT NULL,
    type           SMALLINT NOT NULL CHECK (type BETWEEN 1 AND 255),
    source_account UUID     NOT NULL,
    source_device  SMALLINT NOT NULL CHECK (source_device BETWEEN 1 AND 127),
    client_ts      BIGINT   NOT NULL,
    server_ts      BIGINT   NOT NULL,
    expires_at     BIGINT   NOT NULL,
    urgent         BOOLEAN  NOT NULL,
    content        BYTEA    NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 98304),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
);
CREATE INDEX envelopes_queue ON envelopes (account_id, device_id, seq);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);
-- Acknowledgements delete rows all the time: vacuum the queue eagerly.
ALTER TABLE envelopes SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- Idempotency keys of recent sends, per sending device: the key's and the
-- request's SHA-256, and the answer given.
CREATE TABLE send_receipts (
    account_id   UUID    NOT NULL,
    device_id    INTEGER NOT NULL,
    key_hash     BYTEA   NOT NULL CHECK (octet_length(key_hash) = 32),
    request_hash BYTEA   NOT NULL CHECK (octet_length(request_hash) = 32),
    server_ts    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    PRIMARY KEY (account_id, device_id, key_hash),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
);
CREATE INDEX send_receipts_expiry ON send_receipts (expires_at);
