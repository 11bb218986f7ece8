-- Groups exist only on their members' devices. state is the sealed JSON
-- of name, revision, members and whether we are still in the group.
CREATE TABLE groups (
    id    TEXT PRIMARY KEY,
    state BLOB NOT NULL
);

-- Sender keys (libsignal group sessions): ours for sending, each member
-- device's for receiving. record is sealed.
CREATE TABLE sender_keys (
    group_id   TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    record     BLOB    NOT NULL,
    PRIMARY KEY (group_id, account_id, device_id)
);

-- The members our current sender key was distributed to; cleared when the
-- key is replaced (after someone is removed), so it goes to members again.
CREATE TABLE sender_key_shared (
    group_id   TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (group_id, account_id)
);
