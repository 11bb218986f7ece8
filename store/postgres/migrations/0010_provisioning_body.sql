-- A provisioning message now also carries the account's contacts, groups
-- and conversation settings to the new device: up to 256 KiB
-- (provisioning.MaxBody). The table holds only mailboxes open for ten
-- minutes, so checking the new constraint is quick.
ALTER TABLE provisioning_mailboxes DROP CONSTRAINT provisioning_mailboxes_body_check;
ALTER TABLE provisioning_mailboxes ADD CONSTRAINT provisioning_mailboxes_body_check
    CHECK (body IS NULL OR octet_length(body) BETWEEN 1 AND 262144);
