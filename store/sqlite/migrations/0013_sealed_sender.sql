-- Sealed sender: an envelope sent with an unidentified-access key instead
-- of device credentials has no source the relay knows, so the source
-- columns become optional (both set, or neither). SQLite cannot relax
-- NOT NULL in place: the queue table is rebuilt as in 0012, seq carrying on
-- where it was.
CREATE TABLE envelopes_new (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL CHECK (length(id) = 36),
    account_id     TEXT    NOT NULL,
    device_id      INTEGER NOT NULL,
    type           INTEGER NOT NULL CHECK (type BETWEEN 1 AND 255),
    source_account TEXT    CHECK (source_account IS NULL OR length(source_account) = 36),
    source_device  INTEGER CHECK (source_device IS NULL OR source_device BETWEEN 1 AND 127),
    client_ts      INTEGER NOT NULL,
    server_ts      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    urgent         INTEGER NOT NULL CHECK (urgent IN (0, 1)),
    content        BLOB    CHECK (content IS NULL OR length(content) BETWEEN 1 AND 98304),
    size           INTEGER NOT NULL DEFAULT 0,
    content_id     INTEGER REFERENCES envelope_contents (id),
    CHECK ((content IS NULL) <> (content_id IS NULL)),
    CHECK ((source_account IS NULL) = (source_device IS NULL)),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;
INSERT INTO envelopes_new (seq, id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size, content_id)
    SELECT seq, id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size, content_id FROM envelopes;
INSERT INTO sqlite_sequence (name, seq) SELECT 'envelopes_new', seq FROM sqlite_sequence WHERE name = 'envelopes'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'envelopes_new');
UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'envelopes')) WHERE name = 'envelopes_new';
DROP TABLE envelopes;
ALTER TABLE envelopes_new RENAME TO envelopes;
CREATE INDEX envelopes_queue ON envelopes (account_id, device_id, seq);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);
CREATE INDEX envelopes_content ON envelopes (content_id) WHERE content_id IS NOT NULL;

-- Each account's unidentified-access key (16 bytes its owner derives from
-- its profile key and gives its contacts inside encrypted messages): a
-- sealed send to the account must present it, unless the account allows
-- anyone (unrestricted). Kept as given because a send to several accounts
-- presents the XOR of theirs.
ALTER TABLE accounts ADD COLUMN unidentified_access_key BLOB CHECK (unidentified_access_key IS NULL OR length(unidentified_access_key) = 16);
ALTER TABLE accounts ADD COLUMN unrestricted_unidentified_access INTEGER NOT NULL DEFAULT 0 CHECK (unrestricted_unidentified_access IN (0, 1));

-- Idempotency keys of sealed sends, which have no sending device to file
-- them under: keyed by the key's SHA-256 alone (clients pick 144 random
-- bits), kept as long as other receipts.
CREATE TABLE sealed_send_receipts (
    key_hash     BLOB    PRIMARY KEY CHECK (length(key_hash) = 32),
    request_hash BLOB    NOT NULL CHECK (length(request_hash) = 32),
    server_ts    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    skipped      TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX sealed_send_receipts_expiry ON sealed_send_receipts (expires_at);
