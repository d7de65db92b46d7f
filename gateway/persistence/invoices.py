"""The invoices the gateway issued: chunk-range, plan and credit invoices, the settle index.

Row states are this module's: a chunk invoice is 'open', 'settled' or 'expired'; a plan
invoice 'open', 'settled' or 'canceled'. Functions that change rows take the caller's
connection, so booking a settlement and its ledger entries is one transaction.

Each row names the node that issued it (``node_id``, its pubkey). A node's word that an
invoice settled counts only for the invoices it issued, for the tenants it serves: a
tenant runs its own node, and must not be able to settle another brand's invoices.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.billing.quota import Plan
from gateway.persistence.database import Connection, Database

__all__ = [
    "ChunkSale",
    "PlanSale",
    "Reporter",
    "add_chunk_invoice",
    "add_plan_invoice",
    "expire",
    "expire_stale",
    "issuer_of",
    "open_payment_hashes",
    "record_settle_index",
    "scope",
    "settle_chunk_invoice",
    "settle_index",
    "settle_plan_invoice",
    "tenant_of_invoice",
]

_SETTLE_INDEX_KEY = "lnd_settle_index"


@dataclass(frozen=True)
class Reporter:
    """A node's invoice stream as a witness: it can vouch only for invoices it issued
    (``node_id``) for the tenants it serves. Rows from before issuers were recorded
    (NULL) are vouched for by any node serving their tenant."""

    node_id: str
    tenant_ids: tuple[str, ...]

    def where(self) -> tuple[str, list[str]]:
        """The SQL condition that limits rows to what this node may vouch for."""
        marks = ",".join("?" * len(self.tenant_ids)) or "NULL"
        return (
            f" AND (node_id = ? OR node_id IS NULL) AND tenant_id IN ({marks})",
            [self.node_id, *self.tenant_ids],
        )


_ANYONE: tuple[str, list[str]] = ("", [])  # a preimage proves payment, whoever sends it


def scope(reporter: Reporter | None) -> tuple[str, list[str]]:
    """The condition limiting an UPDATE to rows ``reporter`` may settle (None: any)."""
    return _ANYONE if reporter is None else reporter.where()


@dataclass(frozen=True)
class ChunkSale:
    """A chunk-range invoice just marked settled."""

    file_id: str
    amount_msat: int
    chunk_count: int
    tenant_id: str


@dataclass(frozen=True)
class PlanSale:
    """A plan invoice just marked settled, with the terms it sold (None for a sale made
    before terms were recorded)."""

    account_id: str
    plan_id: str
    amount_msat: int
    tenant_id: str
    quota_bytes: int | None = None
    duration_s: int | None = None


async def add_chunk_invoice(
    conn: Connection,
    payment_hash: bytes,
    file_id: str,
    first: int,
    last: int,
    amount_msat: int,
    bolt11: str,
    created_at: int,
    expires_at: int,
    tenant_id: str,
    node_id: str,
) -> None:
    await conn.execute(
        "INSERT INTO invoices (payment_hash, file_id, first_chunk, last_chunk,"
        " amount_msat, bolt11, created_at, expires_at, tenant_id, node_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            payment_hash,
            file_id,
            first,
            last,
            amount_msat,
            bolt11,
            created_at,
            expires_at,
            tenant_id,
            node_id,
        ),
    )


async def add_plan_invoice(
    conn: Connection,
    payment_hash: bytes,
    account_id: str,
    plan: Plan,
    bolt11: str,
    created_at: int,
    tenant_id: str,
    node_id: str,
) -> None:
    """Records a plan sale with its terms (price, quota, duration) as sold."""
    await conn.execute(
        "INSERT INTO plan_invoices (payment_hash, account_id, plan_id, amount_msat,"
        " quota_bytes, duration_s, bolt11, created_at, tenant_id, node_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            payment_hash,
            account_id,
            plan.id,
            plan.price_msat,
            plan.quota_bytes,
            plan.duration_s,
            bolt11,
            created_at,
            tenant_id,
            node_id,
        ),
    )


async def settle_chunk_invoice(
    conn: Connection,
    payment_hash: bytes,
    now: int,
    settle_index: int | None,
    reporter: Reporter | None = None,
) -> ChunkSale | None:
    """Marks the chunk invoice settled; None if it is not ours, was settled before, or
    ``reporter`` (the node saying so; None for a proof of payment) did not issue it.

    Any state but 'settled' moves: an invoice we had marked expired that LND settled in
    time is still booked."""
    where, params = scope(reporter)
    async with conn.execute(
        "UPDATE invoices SET state = 'settled', settled_at = ?, settle_index = ?"
        f" WHERE payment_hash = ? AND state != 'settled'{where}"
        " RETURNING file_id, amount_msat, last_chunk - first_chunk + 1, tenant_id",
        (now, settle_index, payment_hash, *params),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else ChunkSale(row[0], int(row[1]), int(row[2]), row[3])


async def settle_plan_invoice(
    conn: Connection,
    payment_hash: bytes,
    now: int,
    reporter: Reporter | None = None,
) -> PlanSale | None:
    """Marks the plan invoice settled; None if it is not ours, was settled before, or
    ``reporter`` did not issue it."""
    where, params = scope(reporter)
    async with conn.execute(
        "UPDATE plan_invoices SET state = 'settled', settled_at = ?"
        f" WHERE payment_hash = ? AND state != 'settled'{where}"
        " RETURNING account_id, plan_id, amount_msat, tenant_id, quota_bytes, duration_s",
        (now, payment_hash, *params),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return PlanSale(
        row[0],
        row[1],
        int(row[2]),
        row[3],
        None if row[4] is None else int(row[4]),
        None if row[5] is None else int(row[5]),
    )


async def expire(conn: Connection, payment_hash: bytes) -> None:
    """The node canceled the invoice: an open chunk invoice expires, a plan one cancels."""
    await conn.execute(
        "UPDATE invoices SET state = 'expired' WHERE payment_hash = ? AND state = 'open'",
        (payment_hash,),
    )
    await conn.execute(
        "UPDATE plan_invoices SET state = 'canceled' WHERE payment_hash = ? AND state = 'open'",
        (payment_hash,),
    )
    await conn.execute(
        "UPDATE credits SET state = 'canceled' WHERE payment_hash = ? AND state = 'open'",
        (payment_hash,),
    )


async def expire_stale(conn: Connection, expired_before: int) -> int:
    """Marks open chunk invoices that expired before ``expired_before`` expired, and open
    credit invoices canceled; how many."""
    cur = await conn.execute(
        "UPDATE invoices SET state = 'expired' WHERE state = 'open' AND expires_at < ?",
        (expired_before,),
    )
    credit = await conn.execute(
        "UPDATE credits SET state = 'canceled' WHERE state = 'open' AND invoice_expires_at < ?",
        (expired_before,),
    )
    return cur.rowcount + credit.rowcount


async def open_payment_hashes(db: Database, reporter: Reporter) -> list[bytes]:
    """Payment hashes of every open chunk, plan and credit invoice this node may vouch for."""
    where, params = reporter.where()
    rows = await db.fetch_all(
        f"SELECT payment_hash FROM invoices WHERE state = 'open'{where}"
        f" UNION ALL SELECT payment_hash FROM plan_invoices WHERE state = 'open'{where}"
        f" UNION ALL SELECT payment_hash FROM credits WHERE state = 'open'{where}",
        [*params, *params, *params],
    )
    return [bytes(row[0]) for row in rows]


async def issuer_of(conn: Connection, payment_hash: bytes) -> str | None:
    """The node that issued an unsettled chunk, plan or credit invoice of ours; None if
    unknown (not ours, settled, or issued before issuers were recorded)."""
    async with conn.execute(
        "SELECT node_id FROM invoices WHERE payment_hash = ? AND state != 'settled'"
        " UNION ALL SELECT node_id FROM plan_invoices"
        " WHERE payment_hash = ? AND state != 'settled'"
        " UNION ALL SELECT node_id FROM credits WHERE payment_hash = ? AND state != 'settled'",
        (payment_hash, payment_hash, payment_hash),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def tenant_of_invoice(db: Database, payment_hash: bytes) -> str | None:
    """The tenant a chunk or credit invoice was issued for; None if it is not ours."""
    row = await db.fetch_one(
        "SELECT tenant_id FROM invoices WHERE payment_hash = ?"
        " UNION ALL SELECT tenant_id FROM credits WHERE payment_hash = ?",
        (payment_hash, payment_hash),
    )
    return None if row is None else str(row[0])


async def record_settle_index(conn: Connection, node: str, index: int) -> None:
    """Remembers the highest settle index booked from ``node`` (never moves back)."""
    await conn.execute(
        "INSERT INTO gateway_state (key, value) VALUES (?, ?) ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value"
        " WHERE CAST(gateway_state.value AS BIGINT) < CAST(excluded.value AS BIGINT)",
        (_SETTLE_INDEX_KEY + node, str(index)),
    )


async def settle_index(db: Database, node: str) -> int:
    """The highest settle index booked from ``node``; 0 before the first."""
    row = await db.fetch_one(
        "SELECT value FROM gateway_state WHERE key = ?", (_SETTLE_INDEX_KEY + node,)
    )
    return int(row[0]) if row else 0
