-- Contacts' numbers, identity keys, trust and key dates, and conversation
-- timers, are sealed like message bodies. A number is found through a keyed
-- index (HMAC under a key derived from the at-rest key), never stored in
-- the clear. The old columns are emptied by the Go step that follows this
-- migration (clientdb.sealMetadata); SQLite cannot drop a UNIQUE column.
ALTER TABLE recipients ADD COLUMN number_index BLOB;
ALTER TABLE recipients ADD COLUMN number_sealed BLOB;
ALTER TABLE recipients ADD COLUMN identity_sealed BLOB;
CREATE UNIQUE INDEX recipients_number_index ON recipients (number_index);
CREATE TABLE conversation_timers (
    conversation TEXT PRIMARY KEY,
    sealed       BLOB NOT NULL     -- sealed seconds
);
