-- Accounts are keyed by a random UUID. The phone number exists only as a keyed
-- hash (HMAC-SHA256 under a secret kept outside the database).
CREATE TABLE accounts (
    id                  TEXT    PRIMARY KEY CHECK (length(id) = 36),
    number_hash         BLOB    NOT NULL UNIQUE CHECK (length(number_hash) = 32),
    identity_key        BLOB    NOT NULL CHECK (length(identity_key) = 33),
    -- salt || HMAC of the registration-lock token; NULL when no lock is set
    reglock_hash        BLOB    CHECK (reglock_hash IS NULL OR length(reglock_hash) = 48),
    reglock_failures    INTEGER NOT NULL DEFAULT 0,
    reglock_failure_day INTEGER NOT NULL DEFAULT 0,
    -- days since the Unix epoch: the relay keeps last-seen at day granularity
    last_seen_day       INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    account_id      TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id       INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 127),
    registration_id INTEGER NOT NULL CHECK (registration_id BETWEEN 1 AND 16380),
    -- salt || HMAC of the device's credential
    credential      BLOB    NOT NULL CHECK (length(credential) = 48),
    created_day     INTEGER NOT NULL,
    last_seen_day   INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) STRICT;

CREATE TABLE signed_prekeys (
    account_id TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL CHECK (key_id BETWEEN 1 AND 16777215),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 33),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (account_id, device_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE kem_last_resort_prekeys (
    account_id TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL CHECK (key_id BETWEEN 1 AND 16777215),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 1569),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (account_id, device_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE ec_prekeys (
    account_id TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL CHECK (key_id BETWEEN 1 AND 16777215),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 33),
    PRIMARY KEY (account_id, device_id, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE kem_prekeys (
    account_id TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL CHECK (key_id BETWEEN 1 AND 16777215),
    public_key BLOB    NOT NULL CHECK (length(public_key) = 1569),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (account_id, device_id, key_id),
    FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;

-- Verification sessions: the id is a bearer secret held by the client, stored
-- as its SHA-256; the code as an HMAC; the number as its keyed hash. Times are
-- Unix milliseconds. Rows are deleted once used or expired.
CREATE TABLE verification_sessions (
    id_hash         BLOB    PRIMARY KEY CHECK (length(id_hash) = 32),
    number_hash     BLOB    NOT NULL CHECK (length(number_hash) = 32),
    code_hash       BLOB    CHECK (code_hash IS NULL OR length(code_hash) = 32),
    provider_ref    TEXT    NOT NULL DEFAULT '' CHECK (length(provider_ref) <= 64),
    code_expires_at INTEGER NOT NULL DEFAULT 0,
    sends           INTEGER NOT NULL DEFAULT 0,
    next_send_at    INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    verified_at     INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX verification_sessions_expiry ON verification_sessions (expires_at);
