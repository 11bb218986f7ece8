-- The audit log's key check value: HMAC-SHA256 under the audit key of a
-- fixed label (see package audit), stored the first time the relay uses
-- the log, so a verifier holding the wrong root secret is told so instead
-- of being told that the log was altered. At most one row.
CREATE TABLE audit_key_check (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    key_check BLOB    NOT NULL CHECK (length(key_check) = 32)
) STRICT;
