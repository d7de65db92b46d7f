"""gateway.persistence.pins and migration 005 on a real SQLite file (no kubo: the counting only)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.persistence import pins
from gateway.persistence.database import migrations
from gateway.persistence.sqlite import SqliteDatabase


def _database_before_005(path: Path) -> None:
    """A database as migrations up to 004 left it, with chunks and a queued unpin."""
    conn = sqlite3.connect(path)
    for version, _, sql in migrations():
        if version < 5:
            conn.executescript(sql)
            conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO accounts (id, api_key_hash, created_at) VALUES ('a', x'00', 0)")
    for file_id in ("f1", "f2"):
        conn.execute(
            "INSERT INTO files (id, state, header, manifest, chunk_count, price_msat,"
            " created_at, owner_id) VALUES (?, 'complete', '{}', x'00', 2, 0, 0, 'a')",
            (file_id,),
        )
    conn.executemany(
        "INSERT INTO chunks (file_id, idx, cid, size) VALUES (?, ?, ?, 1)",
        [("f1", 0, "shared"), ("f1", 1, "only-f1"), ("f2", 0, "shared"), ("f2", 1, "only-f2")],
    )
    # The old bug: a conflicting PUT queued a CID a live chunk still uses.
    conn.executemany(
        "INSERT INTO unpin_queue (cid, queued_at) VALUES (?, 0)", [("shared",), ("orphan",)]
    )
    conn.commit()
    conn.close()


async def test_migration_counts_existing_chunks_and_keeps_live_cids_off_the_queue(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.sqlite3"
    _database_before_005(path)
    db = SqliteDatabase(path)
    await db.open()
    try:
        rows = await db.fetch_all("SELECT cid, refs FROM pins ORDER BY cid")
        assert {r[0]: r[1] for r in rows} == {
            "only-f1": 1,
            "only-f2": 1,
            "orphan": 0,
            "shared": 2,
        }
        assert (
            await db.fetch_one("SELECT name FROM sqlite_master WHERE name = 'unpin_queue'") is None
        )
    finally:
        await db.close()


async def test_references_count_up_and_down_and_only_zero_is_unpinned(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "gateway.sqlite3")
    await db.open()
    try:
        async with db.transaction() as conn:
            assert await pins.reference(conn, "c") == 1
            assert await pins.reference(conn, "c") == 2
            await pins.release_unrecorded(conn, "c")  # used by chunks: stays
            await pins.release_unrecorded(conn, "x")  # used by none: to unpin
            assert await pins.unreferenced(conn, 10) == ["x"]
            await pins.unreference(conn, ["c"])
            assert await pins.unreferenced(conn, 10) == ["x"]
            await pins.unreference(conn, ["c", "c"])  # never below zero
            assert sorted(await pins.unreferenced(conn, 10)) == ["c", "x"]
            assert await pins.unreferenced(conn, 10, among=["c"]) == ["c"]
            # Unpinned by kubo meanwhile, a chunk took "c" again: the caller must re-pin.
            assert await pins.reference(conn, "c") == 1
            assert await pins.forget_if_unreferenced(conn, "c") is False
            assert await pins.forget_if_unreferenced(conn, "x") is True
            assert await pins.forget_if_unreferenced(conn, "x") is True  # done by another
            assert await pins.unreferenced(conn, 10) == []
    finally:
        await db.close()
