-- The parley client's local state for one account. Columns marked "sealed"
-- hold XChaCha20-Poly1305 ciphertext under the account's at-rest key, bound
-- to the table and row (see clientdb.Sealer); everything else is public or
-- bookkeeping.

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL,          -- sealed when sealed = 1
    sealed INTEGER NOT NULL
);

-- People we talk to: account id (the Signal address name), their number,
-- their identity key as we last saw it, and how far we trust it.
CREATE TABLE recipients (
    account_id   TEXT PRIMARY KEY,
    number       TEXT UNIQUE,
    identity_key BLOB,             -- 33 bytes; NULL until first seen
    trust        INTEGER NOT NULL DEFAULT 0,
    key_added_ms INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    account_id TEXT NOT NULL,
    device_id  INTEGER NOT NULL,
    record     BLOB NOT NULL,      -- sealed
    PRIMARY KEY (account_id, device_id)
);

CREATE TABLE prekeys (
    id     INTEGER PRIMARY KEY,
    record BLOB NOT NULL           -- sealed
);

CREATE TABLE signed_prekeys (
    id         INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    record     BLOB NOT NULL       -- sealed
);

CREATE TABLE kem_prekeys (
    id          INTEGER PRIMARY KEY,
    last_resort INTEGER NOT NULL,
    seed        BLOB NOT NULL      -- sealed ML-KEM-1024 decapsulation key seed
);

-- Message history. conversation is the other party's account id.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation  TEXT NOT NULL,
    outgoing      INTEGER NOT NULL,
    sender_device INTEGER NOT NULL,
    sent_ms       INTEGER NOT NULL, -- the sender's timestamp: the message's id in receipts
    received_ms   INTEGER NOT NULL,
    status        INTEGER NOT NULL, -- 0 sent/received, 1 delivered, 2 read
    body          BLOB NOT NULL     -- sealed content
);
CREATE INDEX messages_conversation ON messages (conversation, sent_ms);

-- SHA-256 of every envelope ciphertext processed, with the relay's id of the
-- envelope that carried it: the same id again is a redelivery (ignored), the
-- same ciphertext under another id is a replay (reported).
CREATE TABLE seen_envelopes (
    hash        BLOB PRIMARY KEY,
    envelope_id TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
