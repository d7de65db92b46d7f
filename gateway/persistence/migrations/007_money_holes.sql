-- Issue 9 (items 2, 5, 6): who issued each invoice, what each plan sale sold, and which
-- node each withdrawal was paid through.

-- The pubkey of the node that issued the invoice: only that node's invoice stream may
-- book it. NULL for invoices issued before this migration (booked by any watcher that
-- serves the invoice's tenant, as before).
ALTER TABLE invoices ADD COLUMN node_id TEXT;
ALTER TABLE plan_invoices ADD COLUMN node_id TEXT;

-- What a plan invoice sold (its price is amount_msat): a plan changed or removed from the
-- catalogue after the sale is honoured as sold. NULL for sales before this migration,
-- which take the catalogue's terms when they settle, as before.
ALTER TABLE plan_invoices ADD COLUMN quota_bytes INTEGER CHECK (quota_bytes > 0);
ALTER TABLE plan_invoices ADD COLUMN duration_s INTEGER CHECK (duration_s > 0);

-- The node a withdrawal was paid through (pubkey, and the connection settings as JSON),
-- so its outcome is asked of that node even if the tenant has moved to another; and its
-- invoice's expiry, before which a payment LND never heard of may still be sent. NULL
-- for withdrawals from before this migration (the tenant's node and the invoice's own
-- expiry are asked instead).
ALTER TABLE withdrawals ADD COLUMN node_id TEXT;
ALTER TABLE withdrawals ADD COLUMN node_connection TEXT;
ALTER TABLE withdrawals ADD COLUMN invoice_expires_at INTEGER;

-- Payouts were booked against the whole deployment's outside world ('external:lightning')
-- while each tenant's sales come in through its own ('external:lightning:<tenant>'), so
-- no tenant's books summed to zero on their own. Move those entries to the paying-out
-- tenant's outside world, then rebuild the outside-world balances from their entries.
UPDATE ledger_entries
SET account = 'external:lightning:' || (
    SELECT w.tenant_id FROM ledger_transactions t JOIN withdrawals w ON w.id = t.reference
    WHERE t.id = ledger_entries.tx_id
)
WHERE account = 'external:lightning' AND tx_id IN (
    SELECT t.id FROM ledger_transactions t JOIN withdrawals w ON w.id = t.reference
    WHERE t.kind = 'withdrawal_settle'
);
DELETE FROM balances WHERE account = 'external:lightning' OR account LIKE 'external:lightning:%';
INSERT INTO balances (account, balance_msat)
SELECT account, SUM(amount_msat) FROM ledger_entries
WHERE account = 'external:lightning' OR account LIKE 'external:lightning:%'
GROUP BY account;
