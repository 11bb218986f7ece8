-- A provisioning message now also carries the account's contacts, groups
-- and conversation settings to the new device: up to 256 KiB
-- (provisioning.MaxBody). SQLite cannot change a CHECK constraint, so the
-- table is rebuilt, keeping the mailboxes open during the upgrade.
CREATE TABLE provisioning_mailboxes_new (
    address_hash BLOB    PRIMARY KEY CHECK (length(address_hash) = 32),
    body         BLOB    CHECK (body IS NULL OR length(body) BETWEEN 1 AND 262144),
    expires_at   INTEGER NOT NULL
) STRICT;
INSERT INTO provisioning_mailboxes_new (address_hash, body, expires_at)
    SELECT address_hash, body, expires_at FROM provisioning_mailboxes;
DROP TABLE provisioning_mailboxes;
ALTER TABLE provisioning_mailboxes_new RENAME TO provisioning_mailboxes;
CREATE INDEX provisioning_mailboxes_expiry ON provisioning_mailboxes (expires_at);
