-- A multi-recipient send (a group message encrypted once) stores its
-- ciphertext once, in envelope_contents; each recipient device's envelope
-- row points at it (content_id) instead of holding a copy. A 1000-member
-- group message of 96 KiB is 96 KiB on disk, not 96 MB. A content row goes
-- when no envelope points at it any more (PurgeExpired sweeps them, within
-- a minute of the last acknowledgement).
CREATE TABLE envelope_contents (
    id      INTEGER PRIMARY KEY,
    content BLOB NOT NULL CHECK (length(content) BETWEEN 1 AND 98304)
) STRICT;

-- SQLite cannot relax a column's NOT NULL in place: the queue table is
-- rebuilt with content optional, exactly one of content and content_id
-- set. seq continues where it was (AUTOINCREMENT's counter is carried
-- over), so no device's cursor can pass a new envelope.
CREATE TABLE envelopes_new (
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
    content        BLOB    CHECK (content IS NULL OR length(content) BETWEEN 1 AND 98304),
    size           INTEGER NOT NULL DEFAULT 0,
    content_id     INTEGER REFERENCES envelope_contents (id),
    CHECK ((content IS NULL) <> (content_id IS NULL)),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;
INSERT INTO envelopes_new (seq, id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size)
    SELECT seq, id, account_id, device_id, type, source_account, source_device, client_ts, server_ts, expires_at, urgent, content, size FROM envelopes;
INSERT INTO sqlite_sequence (name, seq) SELECT 'envelopes_new', seq FROM sqlite_sequence WHERE name = 'envelopes'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'envelopes_new');
UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'envelopes')) WHERE name = 'envelopes_new';
DROP TABLE envelopes;
ALTER TABLE envelopes_new RENAME TO envelopes;
CREATE INDEX envelopes_queue ON envelopes (account_id, device_id, seq);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);
CREATE INDEX envelopes_content ON envelopes (content_id) WHERE content_id IS NOT NULL;
