"""Prepaid credit: the invoice that buys it, and the balance it leaves to spend.

A row is written with the credit invoice ('open', nothing to spend). Settling it (in the
caller's transaction, with its ledger entry) makes ``remaining_msat`` the amount paid.
A spend is one conditional UPDATE, ``remaining_msat - amount`` only where at least
``amount`` remains: exact with any number of gateway processes on one database, since
the row's lock (PostgreSQL) or the single writer (SQLite) orders the spends, and a spend
that would overdraw changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.billing.credit_rules import CreditState
from gateway.persistence.database import Connection, Database
from gateway.persistence.invoices import Reporter, scope

__all__ = [
    "CreditSale",
    "Spend",
    "add_credit_invoice",
    "credit",
    "settle_credit_invoice",
    "spend",
]


@dataclass(frozen=True)
class CreditSale:
    """A credit invoice just marked settled."""

    tenant_id: str
    amount_msat: int


@dataclass(frozen=True)
class Spend:
    """A spend that went through: its number on the credit and what is left after it."""

    number: int
    remaining_msat: int


async def add_credit_invoice(
    conn: Connection,
    payment_hash: bytes,
    tenant_id: str,
    node_id: str,
    amount_msat: int,
    bolt11: str,
    created_at: int,
    invoice_expires_at: int,
    expires_at: int,
) -> None:
    await conn.execute(
        "INSERT INTO credits (payment_hash, tenant_id, node_id, amount_msat, bolt11,"
        " created_at, invoice_expires_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            payment_hash,
            tenant_id,
            node_id,
            amount_msat,
            bolt11,
            created_at,
            invoice_expires_at,
            expires_at,
        ),
    )


async def settle_credit_invoice(
    conn: Connection,
    payment_hash: bytes,
    now: int,
    settle_index: int | None,
    reporter: Reporter | None = None,
) -> CreditSale | None:
    """Marks the credit invoice settled and its amount spendable; None if it is not ours,
    was settled before, or ``reporter`` (None: a preimage proved it) did not issue it."""
    where, params = scope(reporter)
    async with conn.execute(
        "UPDATE credits SET state = 'settled', settled_at = ?, settle_index = ?,"
        " remaining_msat = amount_msat"
        f" WHERE payment_hash = ? AND state != 'settled'{where}"
        " RETURNING tenant_id, amount_msat",
        (now, settle_index, payment_hash, *params),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else CreditSale(str(row[0]), int(row[1]))


async def spend(
    conn: Connection, payment_hash: bytes, tenant_id: str, amount_msat: int, now: int
) -> Spend | None:
    """Takes ``amount_msat`` from a settled, unexpired credit of ``tenant_id``; None (and
    nothing changed) if it holds less, or is not such a credit."""
    async with conn.execute(
        "UPDATE credits SET remaining_msat = remaining_msat - ?, spends = spends + 1"
        " WHERE payment_hash = ? AND tenant_id = ? AND state = 'settled' AND expires_at > ?"
        " AND remaining_msat >= ? RETURNING spends, remaining_msat",
        (amount_msat, payment_hash, tenant_id, now, amount_msat),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else Spend(int(row[0]), int(row[1]))


async def credit(db: Database, payment_hash: bytes) -> CreditState | None:
    row = await db.fetch_one(
        "SELECT tenant_id, state, amount_msat, remaining_msat, expires_at FROM credits"
        " WHERE payment_hash = ?",
        (payment_hash,),
    )
    if row is None:
        return None
    return CreditState(str(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]))
