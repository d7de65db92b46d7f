"""Several gateway workers starting at the same moment on one new data directory: each
must come up with the full schema and the same token secret."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.billing.tokens import load_or_create_secret
from gateway.persistence.database import migrations, open_database


async def test_several_openers_of_a_new_file_migrate_it_once(tmp_path: Path) -> None:
    # Separate connections, as separate processes would have: each reads the schema
    # version, then each tries to migrate; the losers wait for the lock and find the
    # migrations already applied.
    for attempt in range(5):
        path = tmp_path / f"g{attempt}.sqlite3"
        dbs = [open_database(path) for _ in range(4)]
        await asyncio.gather(*(db.open() for db in dbs))
        try:
            for db in dbs:
                row = await db.fetch_one("PRAGMA user_version")
                assert row is not None and row[0] == migrations()[-1][0]
        finally:
            for db in dbs:
                await db.close()


def test_workers_starting_together_share_one_token_secret(tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"secret-{attempt}"
        with ThreadPoolExecutor(8) as pool:
            secrets = list(pool.map(load_or_create_secret, [path] * 8))
        assert len(set(secrets)) == 1 and len(secrets[0]) == 32
        assert (path.stat().st_mode & 0o777) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
