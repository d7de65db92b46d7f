-- Accounts, quotas and plans, metering, and the double-entry ledger (all amounts in msat).
CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL DEFAULT 'default',
    api_key_hash    BLOB NOT NULL UNIQUE,        -- sha256 of the API key; the key is never stored
    used_bytes      INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    created_at      INTEGER NOT NULL
);

ALTER TABLE files ADD COLUMN owner_id TEXT REFERENCES accounts(id);
-- Metering. Byte-days follow from stored_bytes × (deleted_at or now − created_at).
ALTER TABLE files ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN bytes_served INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN chunks_sold INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN earned_msat INTEGER NOT NULL DEFAULT 0;
CREATE INDEX files_owner ON files(owner_id);

ALTER TABLE invoices ADD COLUMN settle_index INTEGER;

CREATE TABLE subscriptions (
    id              INTEGER PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    plan_id         TEXT NOT NULL,
    quota_bytes     INTEGER NOT NULL,
    starts_at       INTEGER NOT NULL,
    ends_at         INTEGER NOT NULL,
    payment_hash    BLOB NOT NULL UNIQUE
);
CREATE INDEX subscriptions_account ON subscriptions(account_id, ends_at);

CREATE TABLE plan_invoices (
    payment_hash    BLOB PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    plan_id         TEXT NOT NULL,
    amount_msat     INTEGER NOT NULL CHECK (amount_msat > 0),
    bolt11          TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'canceled')),
    created_at      INTEGER NOT NULL,
    settled_at      INTEGER
);

CREATE TABLE ledger_transactions (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (kind, reference)                    -- the same event is never booked twice
);

CREATE TABLE ledger_entries (
    tx_id       INTEGER NOT NULL REFERENCES ledger_transactions(id),
    account     TEXT NOT NULL,
    amount_msat INTEGER NOT NULL CHECK (amount_msat != 0),
    PRIMARY KEY (tx_id, account)
) WITHOUT ROWID;

-- Running balances, updated in the same transaction as the entries. The CHECK is the last
-- line of defence against overdraw: only the outside world may go negative.
CREATE TABLE balances (
    account     TEXT PRIMARY KEY,
    balance_msat INTEGER NOT NULL,
    CHECK (balance_msat >= 0 OR account LIKE 'external:%')
) WITHOUT ROWID;

CREATE TABLE withdrawals (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    idempotency_key TEXT NOT NULL,
    bolt11          TEXT NOT NULL,
    payment_hash    BLOB NOT NULL,
    amount_msat     INTEGER NOT NULL CHECK (amount_msat > 0),
    fee_reserve_msat INTEGER NOT NULL CHECK (fee_reserve_msat >= 0),
    fee_paid_msat   INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    failure         TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX withdrawals_pending ON withdrawals(state) WHERE state = 'pending';

-- Chunks of deleted files still to unpin from kubo (retried until kubo answers).
CREATE TABLE unpin_queue (
    cid         TEXT PRIMARY KEY,
    queued_at   INTEGER NOT NULL
);

-- Small key/value state, e.g. LND's last settle_index we booked.
CREATE TABLE gateway_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);

-- An invoice is paid out at most once, whatever idempotency key asks for it.
CREATE UNIQUE INDEX withdrawals_one_per_invoice ON withdrawals(payment_hash)
    WHERE state != 'failed';
