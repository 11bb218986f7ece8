-- Push wake-ups: each device's one push target (APNs, FCM or Web Push), as
-- JSON, with when it was last pushed (pushes are coalesced per device
-- across every replica: the replica whose UPDATE moves last_push_ms pushes)
-- and until when its service asked us to back off. Removed with the device.
CREATE TABLE push_targets (
    account_id   UUID    NOT NULL,
    device_id    INTEGER NOT NULL,
    target       BYTEA    NOT NULL CHECK (octet_length(target) BETWEEN 2 AND 4096),
    last_push_ms BIGINT NOT NULL DEFAULT 0,
    backoff_ms   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, device_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
);
