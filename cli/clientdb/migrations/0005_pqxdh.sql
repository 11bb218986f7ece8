-- Uses of the last-resort Kyber prekey, which is not deleted after use: a
-- PreKey message that names it with a signed prekey and base key already
-- seen is a replay and is refused. Rows go when their signed prekey does.
CREATE TABLE kyber_prekey_uses (
    kyber_id         INTEGER NOT NULL,
    signed_prekey_id INTEGER NOT NULL,
    base_key         BLOB    NOT NULL,
    PRIMARY KEY (kyber_id, signed_prekey_id, base_key)
);
