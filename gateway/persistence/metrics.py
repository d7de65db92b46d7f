"""The reads behind /metrics: queue depths, and what a just-settled invoice was worth.

Read-only, and written in SQL that SQLite and PostgreSQL both take. Each depth query is
served by a partial index (pins_unreferenced, withdrawals_pending, invoices_open), so a
scrape stays cheap however much history the tables hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.persistence.database import Database

__all__ = ["Backlog", "SettledInvoice", "backlog", "settled_invoice"]


@dataclass(frozen=True)
class Backlog:
    unpin: int  # CIDs at zero references, for the unpinner
    withdrawals: dict[str, int]  # pending withdrawals per tenant
    invoices: dict[str, int]  # open chunk, plan and credit invoices per tenant


@dataclass(frozen=True)
class SettledInvoice:
    kind: str  # "chunks", "plan" or "credit"
    tenant_id: str
    amount_msat: int


async def backlog(db: Database) -> Backlog:
    unpin = await db.fetch_one("SELECT COUNT(*) FROM pins WHERE refs = 0")
    withdrawals = await db.fetch_all(
        "SELECT tenant_id, COUNT(*) FROM withdrawals WHERE state = 'pending' GROUP BY tenant_id"
    )
    invoices = await db.fetch_all(
        "SELECT tenant_id, COUNT(*) FROM ("
        " SELECT tenant_id FROM invoices WHERE state = 'open'"
        " UNION ALL SELECT tenant_id FROM plan_invoices WHERE state = 'open'"
        " UNION ALL SELECT tenant_id FROM credits WHERE state = 'open'"
        ") AS open_invoices GROUP BY tenant_id"
    )
    return Backlog(
        int(unpin[0]) if unpin else 0,
        {str(r[0]): int(r[1]) for r in withdrawals},
        {str(r[0]): int(r[1]) for r in invoices},
    )


async def settled_invoice(db: Database, payment_hash: bytes) -> SettledInvoice | None:
    """The settled chunk, plan or credit invoice with this hash; None if there is none."""
    row = await db.fetch_one(
        "SELECT 'chunks', tenant_id, amount_msat FROM invoices"
        " WHERE payment_hash = ? AND state = 'settled'"
        " UNION ALL SELECT 'plan', tenant_id, amount_msat FROM plan_invoices"
        " WHERE payment_hash = ? AND state = 'settled'"
        " UNION ALL SELECT 'credit', tenant_id, amount_msat FROM credits"
        " WHERE payment_hash = ? AND state = 'settled'",
        (payment_hash, payment_hash, payment_hash),
    )
    return None if row is None else SettledInvoice(str(row[0]), str(row[1]), int(row[2]))
