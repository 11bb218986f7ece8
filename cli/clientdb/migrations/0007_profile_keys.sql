-- Contacts' profile keys (32 bytes each, learned inside their messages),
-- sealed like the rest of a contact's data: whoever holds one may send the
-- contact sealed-sender messages (its unidentified-access key derives from
-- it). Our own profile key is a sealed meta value.
CREATE TABLE profile_keys (
    account_id TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL
);
