-- Restored accounts that never logged in live here, one row in a lean table keyed by the
-- login name, and their legacy ids in a second one, instead of an `accounts` row with four
-- unique indexes, a placeholder API key and a subscription each. An import writes each of
-- the two B-trees in its own key order (a unique index on legacy_accounts(legacy_id) would
-- take its entries in name order, i.e. at random: gateway/persistence/legacy_import.py).
-- The first successful login promotes the account into `accounts` (+ its plan and own
-- quota) and deletes both rows (gateway/persistence/logins.py).
CREATE TABLE legacy_accounts (
    tenant_id           TEXT NOT NULL,
    username_norm       TEXT NOT NULL,          -- NFKC + casefold (identity/usernames.py)
    legacy_id           TEXT NOT NULL,
    username            TEXT NOT NULL,          -- as the user wrote it
    email               TEXT,
    legacy_scheme       TEXT NOT NULL,
    legacy_hash         TEXT NOT NULL,          -- the password record's fields as JSON
    created_at          INTEGER NOT NULL,
    premium_until       INTEGER,
    quota_bytes         INTEGER,                -- becomes free_quota_bytes at promotion
    plan_id             TEXT,                   -- the plan premium time becomes (at import)
    plan_quota_bytes    INTEGER,
    imported_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, username_norm)
) WITHOUT ROWID;
-- legacy_id → the dormant account holding it: the import's "imported already?" check.
CREATE TABLE legacy_ids (
    legacy_id           TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    username_norm       TEXT NOT NULL
) WITHOUT ROWID;

-- Accounts restored by an earlier import that never logged in move over; their
-- subscription (payment_hash = the account's placeholder key) becomes plan_id/plan_quota.
INSERT INTO legacy_accounts (tenant_id, username_norm, legacy_id, username, email,
    legacy_scheme, legacy_hash, created_at, premium_until, quota_bytes, plan_id,
    plan_quota_bytes, imported_at)
SELECT a.tenant_id, a.username_norm, a.legacy_id, a.username, a.email, a.legacy_scheme,
    a.legacy_hash, a.created_at, a.legacy_premium_until, a.legacy_quota_bytes, s.plan_id,
    s.quota_bytes, a.imported_at
FROM accounts AS a LEFT JOIN subscriptions AS s ON s.payment_hash = a.api_key_hash
WHERE a.legacy_id IS NOT NULL AND a.legacy_hash IS NOT NULL AND a.proof_hash IS NULL
    AND a.username_norm IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM login_keys AS k WHERE k.account_id = a.id);
INSERT INTO legacy_ids (legacy_id, tenant_id, username_norm)
SELECT legacy_id, tenant_id, username_norm FROM legacy_accounts;
DELETE FROM subscriptions WHERE payment_hash IN (
    SELECT api_key_hash FROM accounts WHERE legacy_id IN (SELECT legacy_id FROM legacy_ids));
DELETE FROM accounts WHERE legacy_id IN (SELECT legacy_id FROM legacy_ids);

-- The SQLite importer gathers rows into runs and merges each run, sorted, a slice per
-- batch: where the merge of the closed run stands (0: no run to merge).
ALTER TABLE import_checkpoints ADD COLUMN merged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE import_checkpoints ADD COLUMN run_end INTEGER NOT NULL DEFAULT 0;  -- its last row
