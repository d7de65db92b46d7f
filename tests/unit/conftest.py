"""Store-level tests run on both engines: `database_location` is a SQLite file, then a
fresh schema on the session's PostgreSQL server (tests/conftest.py `postgres_server`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.persistence.database import Database, open_database
from regtest import postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_unit_url(postgres_server: str) -> str:
    """One database for the unit tests; each test takes a schema of its own in it."""
    return postgres.run_sync(postgres.create_database(postgres_server, "bitcache_unit"))


@pytest.fixture(params=BACKENDS)
def database_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's database lives: a SQLite path, or a postgresql:// URL."""
    if request.param == "sqlite":
        return tmp_path / "gateway.sqlite3"
    unit_url: str = request.getfixturevalue("postgres_unit_url")
    return postgres.run_sync(postgres.create_schema(unit_url))


@pytest.fixture
async def database(database_location: str | Path) -> AsyncIterator[Database]:
    """An open, migrated, empty database on each engine."""
    db = open_database(database_location)
    await db.open()
    try:
        yield db
    finally:
        await db.close()
