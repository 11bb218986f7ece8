-- Per-device queues of opaque ciphertext envelopes. seq orders a device's
-- queue (AUTOINCREMENT: never reused, so a reader's cursor stays valid after
-- deletes). expires_at is fixed when the envelope is stored: the sender's
-- expiry or the relay's maximum retention, whichever comes first. Times are
-- Unix milliseconds.
CREATE TABLE envelopes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL CHECK (length(id) = 36),
    account_id     TEXT    NOT NULL,
    device_id      INTEGER NOT NULL,
    type           INTEGER NOT NULL CHECK (type BETWEEN 1 AND 255),
    source_account TEXT    NOT NULL CHECK (length(source_account) = 36),
    source_device  INTEGER NOT NULL CHECK (source_device BETWEEN 1 AND 127),
    client_ts      INTEGER NOT NULL,
    server_ts      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    urgent         INTEGER NOT NULL CHECK (urgent IN (0, 1)),
    content        BLOB    NOT NULL CHECK (length(content) BETWEEN 1 AND 98304),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX envelopes_queue ON envelopes (account_id, device_id, seq);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);

-- Idempotency keys of recent sends, per sending device: the key's and the
-- request's SHA-256, and the answer given.
CREATE TABLE send_receipts (
    account_id   TEXT    NOT NULL,
    device_id    INTEGER NOT NULL,
    key_hash     BLOB    NOT NULL CHECK (length(key_hash) = 32),
    request_hash BLOB    NOT NULL CHECK (length(request_hash) = 32),
    server_ts    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id, key_hash),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX send_receipts_expiry ON send_receipts (expires_at);
