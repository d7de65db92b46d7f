-- Paid signups (a tenant's signup_price_msat): the invoice of each signup token, and the
-- account it opened once paid (one account per payment).
CREATE TABLE signup_payments (
    payment_hash    BLOB PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    amount_msat     INTEGER NOT NULL CHECK (amount_msat > 0),
    bolt11          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    account_id      TEXT REFERENCES accounts(id),
    redeemed_at     INTEGER
);
