"""SQLite (WAL) through aiosqlite: one writer connection behind a lock, one for reads.

Every change goes through `transaction()`, so a multi-statement change is all or nothing
and two tasks never interleave statements inside one transaction. `BEGIN IMMEDIATE` takes
the database's write lock at the start, so transactions (of this process and of any other
on the same file) run one after another: a read that decides a write needs no row lock,
and `FOR UPDATE` is dropped (persistence/dialect.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.persistence import database
from gateway.persistence.database import (
    Connection,
    Cursor,
    Database,
    IntegrityError,
    Row,
    Statement,
)
from gateway.persistence.dialect import sqlite_query

__all__ = ["SqliteConnection", "SqliteDatabase"]


class SqliteConnection:
    """The writer connection inside a transaction, as a `Connection`."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Statement:
        return Statement(_run(self._conn, sql, params))

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sqlite_query(sql), [tuple(p) for p in params])
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


async def _run(conn: aiosqlite.Connection, sql: str, params: Iterable[Any]) -> Cursor:
    try:
        async with conn.execute(sqlite_query(sql), tuple(params)) as cur:
            rows: list[Row] = list(await cur.fetchall())
            count = cur.rowcount
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    return Cursor(rows, count if count >= 0 else len(rows))


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        # aiosqlite logs every statement with its parameters at DEBUG: never in our logs.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        try:
            await self._use_wal(self._writer)
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            # An open connection's thread would keep the process alive after the error.
            await self.close()
            raise

    @staticmethod
    async def _use_wal(conn: aiosqlite.Connection) -> None:
        """WAL mode (persistent in the file). Switching needs the file to itself and does
        not wait on busy_timeout, so workers opening one new file together retry."""
        for attempt in range(50):
            try:
                await conn.execute_fetchall("PRAGMA journal_mode=WAL")  # runs to its end
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        """Applies every migration not yet recorded in schema_migrations, in order.

        Each applied migration is recorded by number, so one merged after a higher-numbered
        one (branches land in any order) is still applied; user_version, which older
        databases used alone, stays the highest number applied.
        """
        # Under the write lock (BEGIN IMMEDIATE waits for it): several gateway processes
        # may open one new file at the same moment.
        await conn.executescript(
            "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);"
            " COMMIT;"
        )
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        legacy_version = int(row[0]) if row else 0
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {int(r[0]) async for r in cur}
        if not applied and legacy_version:
            # Made by the user_version-only runner, which applied everything up to it.
            await conn.executemany(
                "INSERT OR IGNORE INTO schema_migrations (version, name, applied_at)"
                " VALUES (?, ?, 0)",
                [(v, n) for v, n, _ in database.migrations() if v <= legacy_version],
            )
            applied = {v for v, _, _ in database.migrations() if v <= legacy_version}
        for version, name, sql in database.migrations():
            if version in applied:
                continue
            highest = max(version, legacy_version, *applied)
            try:
                await conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\n"
                    f"INSERT INTO schema_migrations (version, name, applied_at)"
                    f" VALUES ({version}, '{name}', CAST(strftime('%s', 'now') AS INTEGER));\n"
                    f"PRAGMA user_version = {highest};\nCOMMIT;"
                )
            except Exception as exc:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                # Several gateway processes may start on one new file: another one may
                # have applied this migration while we waited for the write lock.
                async with conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ) as cur:
                    if await cur.fetchone() is not None:
                        applied.add(version)
                        continue
                raise RuntimeError(f"database migration {name} failed: {exc}") from exc
            applied.add(version)

    async def schema_version(self) -> int:
        """The newest migration applied."""
        row = await self.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        assert self._writer is not None, "database not open"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteConnection(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        # One call on the reader's thread runs the statement to its end. Awaiting execute
        # and fetch separately would let concurrent reads interleave on this connection,
        # and a read started while another statement is still open shares that statement's
        # older snapshot: a row committed just before would be missing.
        assert self._reader is not None, "database not open"
        return list(await self._reader.execute_fetchall(sqlite_query(sql), tuple(params)))


# mypy checks both against the protocols the stores are written to.
_database: type[Database] = SqliteDatabase
_connection: type[Connection] = SqliteConnection
