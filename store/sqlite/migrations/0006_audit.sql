-- The security audit log: one row per event, chained by an HMAC over the
-- previous row's MAC and this row's fields (see package audit). Rows name
-- accounts and devices by id only. Updates are refused; rows leave only
-- by the retention purge, from the front.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    account_id TEXT    NOT NULL DEFAULT '',
    device_id  INTEGER NOT NULL DEFAULT 0,
    details    TEXT    NOT NULL,
    prev_mac   BLOB    CHECK (prev_mac IS NULL OR length(prev_mac) = 32),
    mac        BLOB    NOT NULL CHECK (length(mac) = 32)
) STRICT;
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
