"""The database the stores use, whichever engine is behind it.

`Database` is what a store holds: reads (`fetch_one`, `fetch_all`) and `transaction()`,
which yields a `Connection` for changes that must commit together (a settlement and its
ledger entries). Two implementations: SQLite (persistence/sqlite.py, the embedded default)
and PostgreSQL through asyncpg (persistence/postgres.py, for several gateway processes).
`open_database` picks one from the configured location.

Stores write SQL once (persistence/dialect.py rewrites it for PostgreSQL) and read rows by
index or column name, which sqlite3.Row and asyncpg.Record both allow. A constraint
violation raises `IntegrityError` on both; an unreachable server `DatabaseUnavailable`.
On PostgreSQL a failed statement ends its transaction: catch IntegrityError outside the
`transaction()` block, or avoid it with ON CONFLICT.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

__all__ = [
    "Connection",
    "Cursor",
    "Database",
    "DatabaseUnavailable",
    "IntegrityError",
    "Row",
    "Statement",
    "is_postgres_url",
    "migrations",
    "open_database",
    "ping",
]

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class IntegrityError(sqlite3.IntegrityError):
    """A UNIQUE, CHECK, NOT NULL or foreign key constraint refused a change.

    A subclass of sqlite3's, so code written for SQLite (`except sqlite3.IntegrityError`)
    keeps working on PostgreSQL; new code catches this one."""


class DatabaseUnavailable(Exception):
    """The database server cannot be reached; the change did not happen (503)."""


class Row(Protocol):
    """A result row: by position or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...


@dataclass
class Cursor:
    """A statement's result: its rows (all read), and how many rows it changed (or
    returned, for a query or a RETURNING clause)."""

    rows: list[Row] = field(default_factory=list)
    rowcount: int = -1

    async def fetchone(self) -> Row | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Row]:
        return list(self.rows)

    async def __aiter__(self) -> AsyncIterator[Row]:
        for row in self.rows:
            yield row


class Statement:
    """What `Connection.execute` returns: await it, or use it as `async with … as cur`,
    as with aiosqlite."""

    def __init__(self, run: Awaitable[Cursor]) -> None:
        self._run = run

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run.__await__()

    async def __aenter__(self) -> Cursor:
        return await self._run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Connection(Protocol):
    """One connection inside a transaction: what store functions that change rows take."""

    dialect: str  # "sqlite" or "postgresql"

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Statement: ...

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...


class Database(Protocol):
    dialect: str

    async def open(self) -> None:
        """Connects and brings the schema up to date (every migration not yet applied)."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int:
        """The newest migration applied."""

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises."""

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration in gateway/persistence/migrations, in order."""
    found = []
    for entry in resources.files("gateway.persistence.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(_POSTGRES_SCHEMES)


async def ping(db: Database) -> None:
    """One round trip to the database (health checks); DatabaseUnavailable if it is gone."""
    await db.fetch_one("SELECT 1")


def open_database(location: str | Path, *, pool_size: int = 10) -> Database:
    """The database at ``location`` (a SQLite file path or a postgresql:// URL), not yet
    opened. asyncpg is imported only for PostgreSQL."""
    if is_postgres_url(location):
        from gateway.persistence.postgres import PostgresDatabase

        return PostgresDatabase(str(location), pool_size=pool_size)
    from gateway.persistence.sqlite import SqliteDatabase

    return SqliteDatabase(Path(location))
