-- Logins (issue 13): each successful login issues an API key of its own, so logging in on a
-- second device does not cut off the first. accounts.api_key_hash stays the key the account
-- was created with (or an imported account's placeholder); these are the keys logins made.
-- Only the SHA-256 of a key is stored, as for accounts.api_key_hash.
CREATE TABLE login_keys (
    key_hash    BLOB PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX login_keys_account ON login_keys(account_id);
