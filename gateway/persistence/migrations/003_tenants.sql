-- Everything a tenant owns carries its id, so queries can be scoped to the request's brand.
ALTER TABLE files ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE invoices ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE plan_invoices ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE withdrawals ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX accounts_tenant ON accounts(tenant_id);
CREATE INDEX files_tenant ON files(tenant_id);
