-- Issue 9 (items 2, 5, 6): who issued each invoice, what each plan sale sold, and which
-- node each withdrawal was paid through.

-- The pubkey of the node that issued the invoice: only that node's invoice stream may
-- book it. NULL for invoices issued before this migration (booked by any watcher that
-- serves the invoice's tenant, as before).
ALTER TABLE invoices ADD COLUMN node_id TEXT;
ALTER TABLE plan_invoices ADD COLUMN node_id TEXT;
