-- Device linking. A link code lets one new device join an account: the
-- primary device asks for it and passes it to the new device inside the
-- encrypted provisioning message; the relay keeps only its SHA-256.
CREATE TABLE link_codes (
    code_hash  BLOB    PRIMARY KEY CHECK (length(code_hash) = 32),
    account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX link_codes_expiry ON link_codes (expires_at);

-- Provisioning mailboxes: a new device waiting on the provisioning socket
-- under a random address (stored as its SHA-256) until the primary drops
-- the sealed provisioning message in; any replica may hold the socket.
CREATE TABLE provisioning_mailboxes (
    address_hash BLOB    PRIMARY KEY CHECK (length(address_hash) = 32),
    body         BLOB    CHECK (body IS NULL OR length(body) BETWEEN 1 AND 16384),
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX provisioning_mailboxes_expiry ON provisioning_mailboxes (expires_at);
