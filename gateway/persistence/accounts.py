"""Accounts and their API keys. A key is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from gateway.persistence.database import Connection, Database

API_KEY_PREFIX = "bck_"


@dataclass(frozen=True)
class Account:
    id: str
    tenant_id: str
    used_bytes: int


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


async def insert_account(
    conn: Connection, tenant_id: str, now: int | None = None
) -> tuple[Account, str]:
    """A new account and its API key, inside the caller's transaction."""
    account_id = "acct_" + secrets.token_hex(8)
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO accounts (id, tenant_id, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
        (account_id, tenant_id, hash_api_key(api_key), int(time.time()) if now is None else now),
    )
    return Account(account_id, tenant_id, 0), api_key


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, tenant_id: str) -> tuple[Account, str]:
        """A new account and its API key (returned once, never stored)."""
        async with self.db.transaction() as conn:
            return await insert_account(conn, tenant_id)

    async def by_api_key(self, api_key: str) -> Account | None:
        # Looking up by the hash of a 256-bit random key leaks nothing through timing.
        # The key the account was made with, or one a login issued (login_keys).
        key_hash = hash_api_key(api_key)
        row = await self.db.fetch_one(
            "SELECT id, tenant_id, used_bytes FROM accounts WHERE api_key_hash = ?"
            " UNION ALL SELECT a.id, a.tenant_id, a.used_bytes FROM login_keys k"
            " JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ? LIMIT 1",
            (key_hash, key_hash),
        )
        return Account(row[0], row[1], int(row[2])) if row else None

    async def get(self, account_id: str) -> Account | None:
        row = await self.db.fetch_one(
            "SELECT id, tenant_id, used_bytes FROM accounts WHERE id = ?", (account_id,)
        )
        return Account(row[0], row[1], int(row[2])) if row else None

    async def ids_in_tenant(self, tenant_id: str) -> list[str]:
        """Every account of a tenant, oldest first."""
        rows = await self.db.fetch_all(
            "SELECT id FROM accounts WHERE tenant_id = ? ORDER BY created_at", (tenant_id,)
        )
        return [str(r[0]) for r in rows]
