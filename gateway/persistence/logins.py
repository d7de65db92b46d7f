"""Login records: an account's username, login salt, proof hash or old-service hash, and the
API keys logins issue (table login_keys). Only SHA-256 of a key is stored.

A restored account that never logged in is a row of `legacy_accounts` (migration 014), not
of `accounts`: lookups by name look in both, and its first successful login promotes it
(`promote`) into `accounts` with its plan and own quota, in the login's transaction."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from gateway.persistence.accounts import API_KEY_PREFIX, hash_api_key
from gateway.persistence.database import Connection, Database, IntegrityError


@dataclass(frozen=True)
class LoginRecord:
    account_id: str  # "" for a dormant restored account (no `accounts` row yet)
    login_salt: bytes | None = field(repr=False)
    proof_hash: bytes | None = field(repr=False)
    # The old service's record as `legacy_hashes.parse` takes it; None once upgraded.
    legacy_record: dict[str, object] | None = field(repr=False)


async def find(db: Database, tenant_id: str, username_norm: str) -> LoginRecord | None:
    row = await db.fetch_one(
        "SELECT id, login_salt, proof_hash, legacy_scheme, legacy_hash FROM accounts"
        " WHERE tenant_id = ? AND username_norm = ?",
        (tenant_id, username_norm),
    )
    if row is None:
        row = await db.fetch_one(
            "SELECT '', NULL, NULL, legacy_scheme, legacy_hash FROM legacy_accounts"
            " WHERE tenant_id = ? AND username_norm = ?",
            (tenant_id, username_norm),
        )
    if row is None:
        return None
    legacy: dict[str, object] | None = None
    if row[3] is not None and row[4] is not None:
        legacy = {"scheme": row[3]} | json.loads(row[4])
    return LoginRecord(str(row[0]), row[1], row[2], legacy)


@dataclass(frozen=True)
class NewLogin:
    """What a new account's creator sends so that it can log in later."""

    username: str
    username_norm: str
    login_salt: bytes = field(repr=False)
    proof_hash: bytes = field(repr=False)


class UsernameTaken(Exception):
    """Another account of the tenant has this name (compared normalised)."""


async def attach(conn: Connection, tenant_id: str, account_id: str, new: NewLogin) -> None:
    """Give a new account its username and login, inside the caller's transaction (so a
    taken name rolls the account back), or raise UsernameTaken."""
    async with conn.execute(
        "SELECT 1 FROM accounts WHERE tenant_id = ? AND username_norm = ?"
        " UNION ALL SELECT 1 FROM legacy_accounts WHERE tenant_id = ? AND username_norm = ?",
        (tenant_id, new.username_norm, tenant_id, new.username_norm),
    ) as cur:
        if await cur.fetchone() is not None:
            raise UsernameTaken(new.username)
    try:
        await conn.execute(
            "UPDATE accounts SET username = ?, username_norm = ?, login_salt = ?, proof_hash = ?"
            " WHERE id = ?",
            (new.username, new.username_norm, new.login_salt, new.proof_hash, account_id),
        )
    except IntegrityError as exc:
        # Taken meanwhile by a concurrent signup (PostgreSQL; SQLite's writer lock keeps
        # the check above exact): the unique index refuses, the transaction rolls back.
        raise UsernameTaken(new.username) from exc


async def replace_legacy(
    conn: Connection, account_id: str, login_salt: bytes, proof_hash: bytes
) -> bool:
    """Swap the old service's hash for a login salt and proof hash. False when another
    login got there first (the old hash was already gone): that login's proof stands."""
    cur = await conn.execute(
        "UPDATE accounts SET login_salt = ?, proof_hash = ?, legacy_scheme = NULL,"
        " legacy_hash = NULL WHERE id = ? AND legacy_hash IS NOT NULL",
        (login_salt, proof_hash, account_id),
    )
    return cur.rowcount == 1


async def promote(
    conn: Connection,
    tenant_id: str,
    username_norm: str,
    login_salt: bytes,
    proof_hash: bytes,
    now: int,
) -> str | None:
    """Turn a dormant restored account into an `accounts` row with the new login, its plan
    (premium time still ahead) and its own free quota, and delete the dormant row, inside
    the caller's transaction. Its id, or None when another login promoted it first."""
    async with conn.execute(
        "SELECT legacy_id, username, email, created_at, premium_until, quota_bytes, plan_id,"
        " plan_quota_bytes, imported_at FROM legacy_accounts"
        " WHERE tenant_id = ? AND username_norm = ?",
        (tenant_id, username_norm),
    ) as cur:
        found = await cur.fetchone()
    if found is None:
        return None
    row: tuple[Any, ...] = tuple(found[i] for i in range(9))
    legacy_id, username, email, created_at, premium_until, quota, plan_id, plan_quota = row[:8]
    imported = row[8]
    cur = await conn.execute(
        "DELETE FROM legacy_accounts WHERE tenant_id = ? AND username_norm = ?",
        (tenant_id, username_norm),
    )
    if cur.rowcount != 1:  # PostgreSQL: a concurrent login deleted it after our read
        return None
    await conn.execute("DELETE FROM legacy_ids WHERE legacy_id = ?", (legacy_id,))
    # The placeholder key: 8 random bytes (no API key's 32-byte SHA-256 can equal it),
    # also the plan's placeholder payment hash, as accounts restored before 014 had.
    placeholder = secrets.token_bytes(8)
    account_id = "acct_" + placeholder.hex()
    await conn.execute(
        "INSERT INTO accounts (id, tenant_id, api_key_hash, created_at, username,"
        " username_norm, email, free_quota_bytes, login_salt, proof_hash, legacy_id,"
        " legacy_premium_until, legacy_quota_bytes, imported_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account_id,
            tenant_id,
            placeholder,
            created_at,
            username,
            username_norm,
            email,
            quota,  # the tenant's free tier applies when larger (quotas.free_bytes)
            login_salt,
            proof_hash,
            legacy_id,
            premium_until,
            quota,
            imported,
        ),
    )
    if plan_id is not None and premium_until is not None and premium_until > now:
        await conn.execute(
            "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
            " payment_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, plan_id, plan_quota, now, premium_until, placeholder),
        )
    return account_id


async def issue_key(conn: Connection, account_id: str, now: int) -> str:
    """A new API key for the account (returned once, only its hash stored)."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO login_keys (key_hash, account_id, created_at) VALUES (?, ?, ?)",
        (hash_api_key(api_key), account_id, now),
    )
    return api_key
