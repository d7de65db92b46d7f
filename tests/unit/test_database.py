"""The SQLite database: a row committed is visible to the next read, however many reads
overlap on the shared reader connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.persistence.database import Database


async def test_read_after_commit_sees_the_row_while_other_reads_overlap(tmp_path: Path) -> None:
    db = Database(tmp_path / "g.sqlite3")
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
