-- Usernames and passwords, and the accounts restored from the old service
-- (`bitcache-admin import`, gateway/identity/). Columns on `accounts` itself: one row and
-- two indexes per restored account keeps an import of 100 M accounts fast.
ALTER TABLE accounts ADD COLUMN username TEXT;            -- as the user wrote it
ALTER TABLE accounts ADD COLUMN username_norm TEXT;       -- NFKC + casefold (identity/usernames.py)
ALTER TABLE accounts ADD COLUMN email TEXT;
-- The account's own free tier when larger than its tenant's (a restored quota); NULL: the
-- tenant's.
ALTER TABLE accounts ADD COLUMN free_quota_bytes INTEGER CHECK (free_quota_bytes >= 0);
-- Login: the client derives a proof from the password (argon2id under login_salt, which the
-- gateway hands out); the gateway keeps only a hash of that proof, never the password.
ALTER TABLE accounts ADD COLUMN login_salt BLOB;
ALTER TABLE accounts ADD COLUMN proof_hash BLOB;
-- The old service's record as exported. legacy_scheme and legacy_hash (the password record's
-- fields as JSON, without the scheme) are cleared when the first login replaces them by
-- login_salt + proof_hash. Restored accounts get a placeholder api_key_hash (8 bytes, so no
-- API key's 32-byte SHA-256 can equal it) until a login issues a key.
ALTER TABLE accounts ADD COLUMN legacy_id TEXT;
ALTER TABLE accounts ADD COLUMN legacy_scheme TEXT;
ALTER TABLE accounts ADD COLUMN legacy_hash TEXT;
ALTER TABLE accounts ADD COLUMN legacy_premium_until INTEGER;
ALTER TABLE accounts ADD COLUMN legacy_quota_bytes INTEGER;
ALTER TABLE accounts ADD COLUMN imported_at INTEGER;
-- NULLs are distinct in a UNIQUE index, so accounts without a username or legacy id are fine.
CREATE UNIQUE INDEX accounts_username ON accounts(tenant_id, username_norm);
CREATE UNIQUE INDEX accounts_legacy_id ON accounts(legacy_id);
-- accounts_username starts with tenant_id, so it serves lookups by tenant as well: one index
-- less to update for each of 100 M restored accounts.
DROP INDEX accounts_tenant;

-- Where an import of a file stands, written in the same transaction as each batch of rows,
-- so a killed import resumes exactly where its last batch committed.
CREATE TABLE import_checkpoints (
    input_id        TEXT PRIMARY KEY,   -- sha256 of the file's size and first MiB
    path            TEXT NOT NULL,      -- where it was read from (for people)
    size            INTEGER NOT NULL,
    byte_offset     INTEGER NOT NULL,   -- the next line starts here
    line            INTEGER NOT NULL,   -- lines read up to byte_offset
    rows_read       INTEGER NOT NULL DEFAULT 0,
    inserted        INTEGER NOT NULL DEFAULT 0,
    present         INTEGER NOT NULL DEFAULT 0, -- already imported with the same data
    rejected        INTEGER NOT NULL DEFAULT 0,
    plans           INTEGER NOT NULL DEFAULT 0, -- premium time restored as a subscription
    own_quotas      INTEGER NOT NULL DEFAULT 0, -- quota above the tenant's free tier kept
    rejects_path    TEXT,
    rejects_bytes   INTEGER NOT NULL DEFAULT 0, -- the reject file's length at this checkpoint
    started_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
