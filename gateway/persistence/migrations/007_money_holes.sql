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
