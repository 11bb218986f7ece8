-- Per-chat attachment buckets. The relay keeps no member list: only keyed
-- hashes of the member and admin secrets the creating client chose.
-- generation counts member-secret rotations (URLs parleyd signs name it);
-- deleted_at (Unix ms, 0 while live) marks a bucket whose objects are being
-- wiped; the row goes once every URL issued before could have expired.
CREATE TABLE attachment_buckets (
    id           TEXT    PRIMARY KEY CHECK (length(id) = 22),
    member_hash  BYTEA   NOT NULL CHECK (octet_length(member_hash) = 32),
    admin_hash   BYTEA   NOT NULL CHECK (octet_length(admin_hash) = 32),
    generation   INTEGER NOT NULL DEFAULT 0,
    retention_ms BIGINT  NOT NULL CHECK (retention_ms > 0),
    deleted_at   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX attachment_buckets_deleted ON attachment_buckets (deleted_at) WHERE deleted_at > 0;

-- Objects, reserved when their upload URL is issued: size is the exact size
-- the URL allows (it counts against the bucket's quota), created_at is when
-- the retention clock started, expires_at = created_at + the retention.
CREATE TABLE attachment_objects (
    bucket_id  TEXT    NOT NULL REFERENCES attachment_buckets (id) ON DELETE CASCADE,
    object_key TEXT    NOT NULL CHECK (length(object_key) = 22),
    size       BIGINT  NOT NULL CHECK (size > 0),
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    PRIMARY KEY (bucket_id, object_key)
);
CREATE INDEX attachment_objects_expiry ON attachment_objects (expires_at);
