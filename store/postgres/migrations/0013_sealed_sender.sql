-- Sealed sender: an envelope sent with an unidentified-access key instead
-- of device credentials has no source the relay knows, so the source
-- columns become optional (both set, or neither). Dropping NOT NULL touches
-- only the catalog; the pairing check holds for every existing row and is
-- enforced for new ones without a scan.
ALTER TABLE envelopes ALTER COLUMN source_account DROP NOT NULL;
ALTER TABLE envelopes ALTER COLUMN source_device DROP NOT NULL;
ALTER TABLE envelopes ADD CONSTRAINT envelopes_source_pair CHECK ((source_account IS NULL) = (source_device IS NULL)) NOT VALID;

-- Each account's unidentified-access key (16 bytes its owner derives from
-- its profile key and gives its contacts inside encrypted messages): a
-- sealed send to the account must present it, unless the account allows
-- anyone (unrestricted). Kept as given because a send to several accounts
-- presents the XOR of theirs.
ALTER TABLE accounts ADD COLUMN unidentified_access_key BYTEA CHECK (unidentified_access_key IS NULL OR octet_length(unidentified_access_key) = 16);
ALTER TABLE accounts ADD COLUMN unrestricted_unidentified_access BOOLEAN NOT NULL DEFAULT false;

-- Idempotency keys of sealed sends, which have no sending device to file
-- them under: keyed by the key's SHA-256 alone (clients pick 144 random
-- bits), kept as long as other receipts.
CREATE TABLE sealed_send_receipts (
    key_hash     BYTEA    PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    request_hash BYTEA    NOT NULL CHECK (octet_length(request_hash) = 32),
    server_ts    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    skipped      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sealed_send_receipts_expiry ON sealed_send_receipts (expires_at);
