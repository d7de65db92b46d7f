"""Booking ledger transactions in SQLite, inside the caller's database transaction.

The rules (what a sale, a plan or a withdrawal moves) are in billing/ledger.py and pure; this
module only stores them: entries, running balances, and a unique (kind, reference) so
that the same event is never booked twice, whichever path sees it first.
"""

from __future__ import annotations

import time

import aiosqlite

from gateway.billing import ledger
from gateway.persistence.database import Database


async def book(conn: aiosqlite.Connection, tx: ledger.Transaction) -> bool:
    """Books `tx`; False (and nothing changed) if this event was booked before.

    Raises ledger.InsufficientFunds if an account would be overdrawn; the caller's
    transaction then rolls back, so nothing is half-booked."""
    cur = await conn.execute(
        "INSERT OR IGNORE INTO ledger_transactions (kind, reference, created_at) VALUES (?, ?, ?)",
        (tx.kind, tx.reference, int(time.time())),
    )
    if cur.rowcount == 0:
        return False
    tx_id = cur.lastrowid
    accounts = [e.account for e in tx.entries]
    marks = ",".join("?" * len(accounts))
    async with conn.execute(
        f"SELECT account, balance_msat FROM balances WHERE account IN ({marks})", accounts
    ) as rows:
        current = {r[0]: int(r[1]) async for r in rows}
    updated = ledger.apply(current, tx)
    await conn.executemany(
        "INSERT INTO ledger_entries (tx_id, account, amount_msat) VALUES (?, ?, ?)",
        [(tx_id, e.account, e.amount_msat) for e in tx.entries],
    )
    await conn.executemany(
        "INSERT INTO balances (account, balance_msat) VALUES (?, ?)"
        " ON CONFLICT(account) DO UPDATE SET balance_msat = excluded.balance_msat",
        [(account, updated[account]) for account in accounts],
    )
    return True


async def balance(db: Database, account: str) -> int:
    row = await db.fetch_one("SELECT balance_msat FROM balances WHERE account = ?", (account,))
    return int(row[0]) if row else 0


async def tenant_sum(db: Database, tenant_id: str) -> int:
    """The sum of one tenant's balances: its users', their withdrawal holds', and its own
    operator and outside-world accounts. Zero when its books stand on their own."""
    house = ledger.tenant_house_accounts(tenant_id)
    row = await db.fetch_one(
        "SELECT COALESCE(SUM(balance_msat), 0) FROM balances WHERE account IN ("
        " SELECT ? || id FROM accounts WHERE tenant_id = ?"
        " UNION ALL SELECT ? || id FROM withdrawals WHERE tenant_id = ?)"
        f" OR account IN ({', '.join('?' for _ in house)})",
        (ledger.USER_PREFIX, tenant_id, ledger.HOLD_PREFIX, tenant_id, *house),
    )
    assert row is not None
    return int(row[0])


async def totals(db: Database) -> tuple[int, int]:
    """(sum of all entries, sum of all balances): both are zero in a consistent ledger."""
    entries = await db.fetch_one("SELECT COALESCE(SUM(amount_msat), 0) FROM ledger_entries")
    balances = await db.fetch_one("SELECT COALESCE(SUM(balance_msat), 0) FROM balances")
    assert entries is not None and balances is not None
    return int(entries[0]), int(balances[0])
