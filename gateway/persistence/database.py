"""SQLite (WAL) through aiosqlite: one writer connection behind a lock, one for reads.

Every change goes through `transaction()`, so a multi-statement change is all or nothing
and two tasks never interleave statements inside one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration in gateway/persistence/migrations, in order."""
    found = []
    for entry in resources.files("gateway.persistence.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


class Database:
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
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            # An open connection's thread would keep the process alive after the error.
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        return conn

    @staticmethod
    async def _user_version(conn: aiosqlite.Connection) -> int:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        current = await self._user_version(conn)
        for version, name, sql in migrations():
            if version <= current:
                continue
            try:
                await conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
                )
            except Exception as exc:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                # Several gateway processes may start on one new file: another one may
                # have applied this migration while we waited for the write lock.
                if await self._user_version(conn) >= version:
                    continue
                raise RuntimeError(f"database migration {name} failed: {exc}") from exc

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        assert self._writer is not None, "database not open"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        # One call on the reader's thread runs the statement to its end. Awaiting execute
        # and fetch separately would let concurrent reads interleave on this connection,
        # and a read started while another statement is still open shares that statement's
        # older snapshot: a row committed just before would be missing.
        assert self._reader is not None, "database not open"
        return list(await self._reader.execute_fetchall(sql, tuple(params)))
