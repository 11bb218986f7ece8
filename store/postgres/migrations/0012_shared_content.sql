-- A multi-recipient send (a group message encrypted once) stores its
-- ciphertext once, in envelope_contents; each recipient device's envelope
-- row points at it (content_id) instead of holding a copy. A 1000-member
-- group message of 96 KiB is 96 KiB on disk, not 96 MB. A content row goes
-- when no envelope points at it any more (PurgeExpired sweeps them, within
-- a minute of the last acknowledgement).
CREATE TABLE envelope_contents (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    content BYTEA  NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 98304)
);
-- Dropping NOT NULL and adding a nullable column touch only the catalog;
-- the new check is enforced for new rows without scanning the queue
-- (every existing row has its content).
ALTER TABLE envelopes ALTER COLUMN content DROP NOT NULL;
ALTER TABLE envelopes ADD COLUMN content_id BIGINT REFERENCES envelope_contents (id);
ALTER TABLE envelopes ADD CONSTRAINT envelopes_one_content CHECK ((content IS NULL) <> (content_id IS NULL)) NOT VALID;
-- Built by scanning the queue while sends wait: 0011 already needs every
-- replica stopped (deploy/README.md), so both run in that one downtime.
CREATE INDEX envelopes_content ON envelopes (content_id) WHERE content_id IS NOT NULL;
