"""The queue of CIDs to unpin: filled when a file is deleted, drained when kubo answers."""

from __future__ import annotations

import aiosqlite

from gateway.persistence.database import Database

__all__ = ["enqueue", "queued", "remove"]


async def enqueue(conn: aiosqlite.Connection, cids: list[str], now: int) -> None:
    await conn.executemany(
        "INSERT OR IGNORE INTO unpin_queue (cid, queued_at) VALUES (?, ?)",
        [(cid, now) for cid in cids],
    )


async def queued(db: Database, limit: int) -> list[str]:
    """The oldest ``limit`` CIDs waiting."""
    rows = await db.fetch_all("SELECT cid FROM unpin_queue ORDER BY queued_at LIMIT ?", (limit,))
    return [str(row[0]) for row in rows]


async def remove(conn: aiosqlite.Connection, cid: str) -> None:
    await conn.execute("DELETE FROM unpin_queue WHERE cid = ?", (cid,))
