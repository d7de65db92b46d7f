"""Booking ledger transactions inside the caller's database transaction.

The rules (what a sale, a plan or a withdrawal moves) are in billing/ledger.py and pure; this
module only stores them: entries, running balances, and a unique (kind, reference) so
that the same event is never booked twice, whichever path sees it first.

Exact with concurrent writers (PostgreSQL, several processes): the balances a transaction
moves are made if missing and locked, in account order (so two bookings never deadlock),
before they are checked; then written as deltas.
"""

from __future__ import annotations

import time

from gateway.billing import ledger
from gateway.persistence.database import Connection, Database


async def book(conn: Connection, tx: ledger.Transaction) -> bool:
    """Books `tx`; False (and nothing changed) if this event was booked before.

    Raises ledger.InsufficientFunds if an account would be overdrawn; the caller's
    transaction then rolls back, so nothing is half-booked."""
    # A concurrent booking of the same event waits here for the other to commit, then
    # inserts nothing (PostgreSQL); SQLite's single writer never gets that far.
    async with conn.execute(
        "INSERT INTO ledger_transactions (kind, reference, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (kind, reference) DO NOTHING RETURNING id",
        (tx.kind, tx.reference, int(time.time())),
    ) as cur:
        inserted = await cur.fetchone()
    if inserted is None:
        return False
    tx_id = int(inserted[0])
    # Each balance row is made if missing and locked, one at a time in account order:
    # every booking then takes its rows in one global order, so two never wait on each
    # other in a cycle (a row locked as "missing" by one booking while another makes it
    # would otherwise be taken out of order). The no-op DO UPDATE is what locks a row
    # that exists; on SQLite the writer lock already serialises bookings.
    current: dict[str, int] = {}
    for account in sorted({e.account for e in tx.entries}):
        async with conn.execute(
            "INSERT INTO balances (account, balance_msat) VALUES (?, 0) ON CONFLICT (account)"
            " DO UPDATE SET balance_msat = balances.balance_msat RETURNING balance_msat",
            (account,),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        current[account] = int(row[0])
    ledger.apply(current, tx)  # raises InsufficientFunds: the caller's transaction rolls back
    await conn.executemany(
        "INSERT INTO ledger_entries (tx_id, account, amount_msat) VALUES (?, ?, ?)",
        [(tx_id, e.account, e.amount_msat) for e in tx.entries],
    )
    await conn.executemany(
        "UPDATE balances SET balance_msat = balance_msat + ? WHERE account = ?",
        sorted(((e.amount_msat, e.account) for e in tx.entries), key=lambda d: d[1]),
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
