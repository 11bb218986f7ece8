-- The security audit log: one row per event, chained by an HMAC over the
-- previous row's MAC and this row's fields (see package audit). Rows name
-- accounts and devices by id only. Updates are refused; rows leave only
-- by the retention purge, from the front.
CREATE TABLE audit_log (
    seq        BIGINT  PRIMARY KEY,
    at         BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    account_id TEXT    NOT NULL DEFAULT '',
    device_id  INTEGER NOT NULL DEFAULT 0,
    details    TEXT    NOT NULL,
    prev_mac   BYTEA   CHECK (prev_mac IS NULL OR octet_length(prev_mac) = 32),
    mac        BYTEA   NOT NULL CHECK (octet_length(mac) = 32)
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
