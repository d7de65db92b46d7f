-- Prepaid credit (issue 15: a paid download's first byte waits for a database debit, not
-- for a Lightning payment). One row per credit invoice: it is 'open' until paid, then
-- holds remaining_msat, spent by conditional UPDATEs (never below zero, whichever process
-- spends) until expires_at. spends counts the debits, so each is booked under its own
-- ledger reference ("<payment hash>:<n>").
CREATE TABLE credits (
    payment_hash        BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    node_id             TEXT,
    amount_msat         INTEGER NOT NULL CHECK (amount_msat > 0),
    remaining_msat      INTEGER NOT NULL DEFAULT 0 CHECK (remaining_msat >= 0),
    spends              INTEGER NOT NULL DEFAULT 0,
    bolt11              TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'open'
                        CHECK (state IN ('open', 'settled', 'canceled')),
    created_at          INTEGER NOT NULL,
    invoice_expires_at  INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    settled_at          INTEGER,
    settle_index        INTEGER,
    CHECK (remaining_msat <= amount_msat)
);
CREATE INDEX credits_open ON credits(state) WHERE state = 'open';
