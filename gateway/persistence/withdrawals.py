"""Withdrawal rows: 'pending' while the payment is out, then 'succeeded' or 'failed'.

The money itself moves in the ledger (holds, payouts, releases); these rows say which
payment each hold belongs to, which node it was sent through (its connection settings
and pubkey) and when its invoice expires, so a crash mid-payment can be finished exactly
once, by asking the node that knows.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.persistence.database import Connection, Database, Row

__all__ = [
    "Finished",
    "Pending",
    "Withdrawal",
    "by_id",
    "by_key",
    "finish",
    "get",
    "insert",
    "pending",
]


@dataclass(frozen=True)
class Withdrawal:
    id: str
    account_id: str
    amount_msat: int
    fee_reserve_msat: int
    fee_paid_msat: int | None
    state: str
    failure: str | None
    payment_hash: bytes
    bolt11: str

    def public(self) -> dict[str, object]:
        return {
            "withdrawal_id": self.id,
            "state": self.state,
            "amount_msat": self.amount_msat,
            "fee_reserve_msat": self.fee_reserve_msat,
            "fee_paid_msat": self.fee_paid_msat,
            "failure": self.failure,
            "payment_hash": self.payment_hash.hex(),
        }


@dataclass(frozen=True)
class Finished:
    """What a withdrawal held, returned when it leaves 'pending'."""

    account_id: str
    amount_msat: int
    fee_reserve_msat: int
    tenant_id: str


@dataclass(frozen=True)
class Pending:
    """A withdrawal whose outcome is not booked yet, and where to ask about it. The node
    fields are None for withdrawals recorded before nodes were (the tenant's node then)."""

    id: str
    payment_hash: bytes
    tenant_id: str
    bolt11: str
    node_id: str | None
    node_connection: str | None  # JSON of the connection settings, the caller's format
    invoice_expires_at: int | None


_COLUMNS = (
    "id, account_id, amount_msat, fee_reserve_msat, fee_paid_msat, state, failure,"
    " payment_hash, bolt11"
)


def _from_row(row: Row) -> Withdrawal:
    return Withdrawal(
        row[0],
        row[1],
        int(row[2]),
        int(row[3]),
        None if row[4] is None else int(row[4]),
        row[5],
        row[6],
        bytes(row[7]),
        str(row[8]),
    )


async def get(db: Database, account_id: str, withdrawal_id: str) -> Withdrawal | None:
    """The account's withdrawal; None if there is none or it is another account's."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM withdrawals WHERE id = ? AND account_id = ?",
        (withdrawal_id, account_id),
    )
    return _from_row(row) if row else None


async def by_id(db: Database, withdrawal_id: str) -> Withdrawal | None:
    row = await db.fetch_one(f"SELECT {_COLUMNS} FROM withdrawals WHERE id = ?", (withdrawal_id,))
    return _from_row(row) if row else None


async def by_key(db: Database, account_id: str, key: str) -> Withdrawal | None:
    """The account's withdrawal made with this idempotency key."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM withdrawals WHERE account_id = ? AND idempotency_key = ?",
        (account_id, key),
    )
    return _from_row(row) if row else None


async def insert(
    conn: Connection,
    withdrawal_id: str,
    account_id: str,
    idempotency_key: str,
    bolt11: str,
    payment_hash: bytes,
    amount_msat: int,
    fee_reserve_msat: int,
    created_at: int,
    tenant_id: str,
    node_id: str,
    node_connection: str,
    invoice_expires_at: int,
) -> None:
    """A new 'pending' withdrawal, sent through the node ``node_id`` reached with
    ``node_connection``. IntegrityError if the key was used or the invoice is
    already being paid out."""
    await conn.execute(
        "INSERT INTO withdrawals (id, account_id, idempotency_key, bolt11,"
        " payment_hash, amount_msat, fee_reserve_msat, state, created_at, tenant_id,"
        " node_id, node_connection, invoice_expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (
            withdrawal_id,
            account_id,
            idempotency_key,
            bolt11,
            payment_hash,
            amount_msat,
            fee_reserve_msat,
            created_at,
            tenant_id,
            node_id,
            node_connection,
            invoice_expires_at,
        ),
    )


async def finish(
    conn: Connection,
    withdrawal_id: str,
    fee_paid_msat: int | None,
    failure: str | None,
    now: int,
) -> Finished | None:
    """Moves a pending withdrawal to 'succeeded' (fee paid given) or 'failed'; None if it
    was not pending (another path finished it)."""
    state = "failed" if fee_paid_msat is None else "succeeded"
    async with conn.execute(
        "UPDATE withdrawals SET state = ?, fee_paid_msat = ?, failure = ?,"
        " finished_at = ? WHERE id = ? AND state = 'pending'"
        " RETURNING account_id, amount_msat, fee_reserve_msat, tenant_id",
        (state, fee_paid_msat, failure, now, withdrawal_id),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else Finished(row[0], int(row[1]), int(row[2]), str(row[3]))


async def pending(db: Database) -> list[Pending]:
    """Every pending withdrawal, oldest first."""
    rows = await db.fetch_all(
        "SELECT id, payment_hash, tenant_id, bolt11, node_id, node_connection,"
        " invoice_expires_at FROM withdrawals WHERE state = 'pending' ORDER BY created_at, id"
    )
    return [
        Pending(
            str(r[0]),
            bytes(r[1]),
            str(r[2]),
            str(r[3]),
            None if r[4] is None else str(r[4]),
            None if r[5] is None else str(r[5]),
            None if r[6] is None else int(r[6]),
        )
        for r in rows
    ]
