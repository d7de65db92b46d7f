"""SQL straight into a test gateway's database, whichever engine it is on: for tests that
tamper with rows (a dishonest gateway) or move time (an invoice long expired)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.persistence.database import Database, open_database

Where = GatewayConfig | str | Path  # a gateway's config, or its database's location


def _database(where: Where) -> Database:
    return open_database(where.database if isinstance(where, GatewayConfig) else where)


async def execute(config: Where, sql: str, *params: Any) -> int:
    """Runs one statement in a transaction of its own; the rows it changed."""
    db = _database(config)
    await db.open()
    try:
        async with db.transaction() as conn:
            return (await conn.execute(sql, params)).rowcount
    finally:
        await db.close()


async def fetch_all(config: Where, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row, as tuples."""
    db = _database(config)
    await db.open()
    try:
        rows = await db.fetch_all(sql, params)
    finally:
        await db.close()
    return [tuple(row[i] for i in range(len(row))) for row in rows]


@asynccontextmanager
async def opened(config: Where) -> AsyncIterator[Database]:
    """The database, open for several reads (`rows`), closed when the block ends."""
    db = _database(config)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def rows(db: Database, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` on an `opened` database, as tuples."""
    return [tuple(row[i] for i in range(len(row))) for row in await db.fetch_all(sql, params)]


async def fetch_value(config: Where, sql: str, *params: Any) -> Any:
    """The first column of the first row (None if there is none)."""
    rows = await fetch_all(config, sql, *params)
    return rows[0][0] if rows else None
