-- The attachment bucket each conversation uses on the relay: its id and the
-- member and admin secrets (sealed), created by whichever side sent a file
-- first and shared inside the encrypted messages. When both sides created
-- one at once, both keep the bucket with the smaller id.
CREATE TABLE buckets (
    conversation TEXT PRIMARY KEY,
    bucket_id    TEXT NOT NULL,
    secrets      BLOB NOT NULL     -- sealed: member secret || admin secret
);
