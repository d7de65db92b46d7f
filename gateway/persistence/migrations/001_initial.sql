-- Files, their ciphertext chunks in IPFS, and the invoices sold for them.
CREATE TABLE files (
    id              TEXT PRIMARY KEY,          -- base32 file id (format.md §5.1)
    state           TEXT NOT NULL CHECK (state IN ('uploading', 'complete', 'deleted')),
    header          TEXT NOT NULL,             -- public FileHeader JSON
    manifest        BLOB NOT NULL,             -- sealed manifest (ciphertext)
    chunk_count     INTEGER NOT NULL CHECK (chunk_count >= 1),
    price_msat      INTEGER NOT NULL CHECK (price_msat >= 0),  -- per chunk
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    deleted_at      INTEGER
);

CREATE TABLE chunks (
    file_id     TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    cid         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;

CREATE TABLE invoices (
    payment_hash    BLOB PRIMARY KEY,
    file_id         TEXT NOT NULL REFERENCES files(id),
    first_chunk     INTEGER NOT NULL,
    last_chunk      INTEGER NOT NULL,
    amount_msat     INTEGER NOT NULL CHECK (amount_msat > 0),
    bolt11          TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'expired')),
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    settled_at      INTEGER
);
CREATE INDEX invoices_open ON invoices(state) WHERE state = 'open';
