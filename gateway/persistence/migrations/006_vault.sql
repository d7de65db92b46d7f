-- The vault (docs/format.md §14): wrapped master keys and opaque tree objects per account,
-- with one change counter per account. Everything here is ciphertext or public wrap metadata.
CREATE TABLE vaults (
    account_id  TEXT PRIMARY KEY REFERENCES accounts(id),
    counter     INTEGER NOT NULL DEFAULT 0 CHECK (counter >= 0),
    object_bytes INTEGER NOT NULL DEFAULT 0 CHECK (object_bytes >= 0),
    created_at  INTEGER NOT NULL
);

CREATE TABLE vault_keys (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    name        TEXT NOT NULL,                  -- 'password' or 'link-<id>'
    wrapped     BLOB NOT NULL,                  -- wrapped-key JSON (§14.3)
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;

CREATE TABLE vault_objects (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    object_id   TEXT NOT NULL,
    counter     INTEGER NOT NULL,               -- the batch that last wrote it
    data        BLOB,                           -- sealed object; NULL once removed (tombstone)
    PRIMARY KEY (account_id, object_id)
) WITHOUT ROWID;
CREATE INDEX vault_objects_changes ON vault_objects(account_id, counter);
