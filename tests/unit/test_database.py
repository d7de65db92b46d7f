"""The SQLite database: a row committed is visible to the next read, however many reads
overlap on the shared reader connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.persistence.database import open_database
from gateway.persistence.sqlite import SqliteDatabase


async def test_read_after_commit_sees_the_row_while_other_reads_overlap(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.sqlite3")
    await db.open()
    try:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, pad BLOB)")
            await conn.executemany(
                "INSERT INTO probe (id, pad) VALUES (?, zeroblob(512))",
                [(-i,) for i in range(1, 2001)],
            )
        stop = asyncio.Event()
        missing: list[int] = []

        async def reader() -> None:  # long reads keep statements open on the reader
            while not stop.is_set():
                await db.fetch_all("SELECT id, pad FROM probe WHERE id < 0")

        async def writer(i: int) -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO probe (id) VALUES (?)", (i,))
            if await db.fetch_one("SELECT id FROM probe WHERE id = ?", (i,)) is None:
                missing.append(i)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        await asyncio.gather(*(writer(i) for i in range(1, 2001)))
        stop.set()
        await asyncio.gather(*readers)
        assert missing == []
    finally:
        await db.close()


async def test_a_migration_numbered_below_one_applied_is_still_applied(
    database_location: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Branches land in any order: 012 may arrive after 013 and 014 were applied
    somewhere (012: one that no later migration builds on). On both engines
    (tests/unit/conftest.py)."""
    from gateway.persistence import database

    everything = database.migrations()
    without_12 = [m for m in everything if m[0] != 12]
    monkeypatch.setattr(database, "migrations", lambda: without_12)
    db = open_database(database_location)
    await db.open()
    await db.close()
    monkeypatch.setattr(database, "migrations", lambda: everything)
    db = open_database(database_location)
    await db.open()  # applies 012 now, and nothing twice
    try:
        rows = await db.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m[0] for m in everything]
        assert await db.schema_version() == everything[-1][0]
    finally:
        await db.close()
    db = open_database(database_location)
    await db.open()  # and a third open applies nothing
    await db.close()
