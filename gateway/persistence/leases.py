"""Leases on Lightning nodes' invoice streams: which gateway process follows each one.

A lease is a row (node, holder, expires_at_ms). One statement takes or renews it: an
INSERT for a node nobody holds, else an UPDATE that applies only if the row is already
the caller's or has expired. Both engines run that statement atomically (SQLite under its
write lock, PostgreSQL by locking the conflicting row and re-checking the condition), so
two processes can never both be told they hold the same unexpired lease.

Times are the callers' wall clocks in milliseconds: processes on several machines need
clocks that agree (NTP) to well within a lease's length.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.persistence.database import Database

__all__ = ["Lease", "current", "release", "take"]


@dataclass(frozen=True)
class Lease:
    node: str
    holder: str
    expires_at_ms: int


async def take(db: Database, node: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
    """Takes or renews ``node``'s lease for ``holder`` until ``now_ms + ttl_ms``.

    True if ``holder`` holds it now; False (nothing changed) while another holder's lease
    has not expired."""
    async with (
        db.transaction() as conn,
        conn.execute(
            "INSERT INTO stream_leases (node, holder, expires_at_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (node) DO UPDATE"
            " SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms"
            " WHERE stream_leases.holder = excluded.holder"
            " OR stream_leases.expires_at_ms <= ?"
            " RETURNING holder",
            (node, holder, now_ms + ttl_ms, now_ms),
        ) as cur,
    ):
        row = await cur.fetchone()
    return row is not None


async def release(db: Database, node: str, holder: str) -> bool:
    """Gives the lease up at once (a clean stop), if ``holder`` still has it."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "DELETE FROM stream_leases WHERE node = ? AND holder = ?", (node, holder)
        )
        return bool(cur.rowcount)


async def current(db: Database, node: str) -> Lease | None:
    """The node's lease row as it stands (it may have expired)."""
    row = await db.fetch_one(
        "SELECT node, holder, expires_at_ms FROM stream_leases WHERE node = ?", (node,)
    )
    return None if row is None else Lease(str(row[0]), str(row[1]), int(row[2]))
