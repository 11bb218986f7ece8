-- Contacts' account ids and group ids are stored as keyed pseudonyms
-- (HMAC under a key derived from the at-rest key), so the file alone does
-- not say whom the account talks to or which groups it is in. refs keeps
-- each id sealed under its pseudonym, for the lists that must name them.
-- The Go step that follows (clientdb.pseudonymise) rewrites existing rows.
CREATE TABLE refs (
    ref    TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
