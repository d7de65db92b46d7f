"""Paid signups: the invoice behind each signup token, and the account it opened.

A row is written with the invoice; `claim` records the account in the caller's
transaction (with the account's own row and the ledger entry), once per payment.
"""

from __future__ import annotations

from gateway.persistence.database import Connection, Database

__all__ = ["add_signup_invoice", "claim", "issued", "tenant_of_signup"]


async def add_signup_invoice(
    conn: Connection,
    payment_hash: bytes,
    tenant_id: str,
    amount_msat: int,
    bolt11: str,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO signup_payments (payment_hash, tenant_id, amount_msat, bolt11, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (payment_hash, tenant_id, amount_msat, bolt11, now),
    )


async def claim(
    conn: Connection, payment_hash: bytes, tenant_id: str, account_id: str, now: int
) -> int | None:
    """Records that this payment opened `account_id` and returns its amount in msat; None
    if it opened an account already or this tenant issued no such signup invoice."""
    async with conn.execute(
        "UPDATE signup_payments SET account_id = ?, redeemed_at = ?"
        " WHERE payment_hash = ? AND tenant_id = ? AND account_id IS NULL"
        " RETURNING amount_msat",
        (account_id, now, payment_hash, tenant_id),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def issued(conn: Connection, payment_hash: bytes, tenant_id: str) -> bool:
    async with conn.execute(
        "SELECT 1 FROM signup_payments WHERE payment_hash = ? AND tenant_id = ?",
        (payment_hash, tenant_id),
    ) as cur:
        return await cur.fetchone() is not None


async def tenant_of_signup(db: Database, payment_hash: bytes) -> str | None:
    row = await db.fetch_one(
        "SELECT tenant_id FROM signup_payments WHERE payment_hash = ?", (payment_hash,)
    )
    return str(row[0]) if row else None
