-- Disappearing messages: each conversation's timer in seconds (no row:
-- off), when each message disappears (Unix ms, 0 = never) and the files
-- saved for it (sealed JSON list of paths), which are deleted with it.
CREATE TABLE timers (
    conversation TEXT PRIMARY KEY,
    seconds      INTEGER NOT NULL CHECK (seconds > 0)
);
ALTER TABLE messages ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN files BLOB;
CREATE INDEX messages_expiry ON messages (expires_ms) WHERE expires_ms > 0;
