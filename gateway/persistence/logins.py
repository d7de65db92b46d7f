"""Login records: an account's username, login salt, proof hash or old-service hash, and the
API keys logins issue (table login_keys). Only SHA-256 of a key is stored."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from gateway.persistence.accounts import API_KEY_PREFIX, hash_api_key
from gateway.persistence.database import Connection, Database, IntegrityError


@dataclass(frozen=True)
class LoginRecord:
    account_id: str
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
        "SELECT 1 FROM accounts WHERE tenant_id = ? AND username_norm = ?",
        (tenant_id, new.username_norm),
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


async def issue_key(conn: Connection, account_id: str, now: int) -> str:
    """A new API key for the account (returned once, only its hash stored)."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO login_keys (key_hash, account_id, created_at) VALUES (?, ?, ?)",
        (hash_api_key(api_key), account_id, now),
    )
    return api_key
