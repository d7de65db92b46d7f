"""PostgreSQL through asyncpg: a connection pool, shared by any number of gateway processes.

Transactions run at READ COMMITTED, concurrently, in this process and in others. What
SQLite got from its single writer, stores get here from the statements themselves:
conditional updates (`UPDATE … WHERE state = 'open'`), unique keys with ON CONFLICT, and a
row lock (`SELECT … FOR UPDATE`) wherever a row is read to decide a write (an account's
used bytes before a reservation, the balances a ledger transaction moves). A transaction
always locks balances in account order, so two never wait on each other in a cycle.

Migrations are the SQLite scripts rewritten by persistence/dialect.py, one transaction
each, under an advisory lock so that processes starting together apply each exactly once;
the applied versions are rows of `schema_migrations`.

Bulk loads use COPY (`copy_records`), about 3x the rate of batched INSERTs.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncpg

from gateway.persistence import database
from gateway.persistence.database import (
    Connection,
    Cursor,
    Database,
    DatabaseUnavailable,
    IntegrityError,
    Row,
    Statement,
)
from gateway.persistence.dialect import postgres_query, postgres_schema, returns_rows

__all__ = ["PostgresConnection", "PostgresDatabase"]

T = TypeVar("T")
# Held while migrating, so that concurrent starts apply each migration once ("bitcache").
_MIGRATION_LOCK = 0x6269_7463_6163_6865
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_CONNECT_TIMEOUT_S = 5.0
_ACQUIRE_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0
# Errors that mean "the server is not there (now)": the change did not happen.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    # A deadlock or serialisation failure: the transaction was rolled back; try again.
    asyncpg.TransactionRollbackError,
)


async def _translated(call: Awaitable[T]) -> T:
    """Runs a database call, raising our exceptions for asyncpg's."""
    try:
        return await call
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(str(exc)) from exc
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
    except asyncpg.InterfaceError as exc:
        if "closed" in str(exc):  # the connection went away under us
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        raise


def _count(status: str) -> int:
    """Rows changed, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class PostgresConnection:
    """A pooled connection inside a transaction, as a `Connection`; plus COPY."""

    dialect = "postgresql"

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Statement:
        return Statement(self._run(sql, tuple(params)))

    async def _run(self, sql: str, params: tuple[Any, ...]) -> Cursor:
        query = postgres_query(sql)
        if returns_rows(query):
            rows: list[Row] = await _translated(self.raw.fetch(query, *params))
            return Cursor(rows, len(rows))
        status: str = await _translated(self.raw.execute(query, *params))
        return Cursor([], _count(status))

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        args = [tuple(p) for p in params]
        if args:
            await _translated(self.raw.executemany(postgres_query(sql), args))

    async def copy_records(
        self,
        table: str,
        columns: Sequence[str],
        records: Iterable[Sequence[Any]],
        *,
        skip_conflicts: bool = False,
    ) -> int:
        """Loads rows with COPY, in this transaction; how many rows were added.

        With ``skip_conflicts`` the rows go through a temporary table and then
        `INSERT … SELECT … ON CONFLICT DO NOTHING` (COPY itself cannot skip a row), so a
        row whose key exists is left out, as with INSERT OR IGNORE. Values must have the
        columns' exact types (int for BIGINT, bytes for BYTEA, str for TEXT)."""
        for name in (table, *columns):
            if not _NAME.match(name):
                raise ValueError(f"not a plain SQL name: {name!r}")
        names = ", ".join(columns)
        if not skip_conflicts:
            status = await _translated(
                self.raw.copy_records_to_table(table, records=records, columns=list(columns))
            )
            return _count(status)
        staging = f"copy_{table}"
        await _translated(
            self.raw.execute(
                f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS"
                f" SELECT {names} FROM {table} WITH NO DATA"
            )
        )
        await _translated(
            self.raw.copy_records_to_table(staging, records=records, columns=list(columns))
        )
        status = await _translated(
            self.raw.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging}"
                " ON CONFLICT DO NOTHING"
            )
        )
        await _translated(self.raw.execute(f"DROP TABLE {staging}"))
        return _count(status)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        # The URL may carry a password: it is never logged, and not kept in repr().
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return "PostgresDatabase(…)"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
            )
        except asyncpg.InvalidCatalogNameError:
            raise  # a misconfiguration (no such database), not an outage
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        for version, name, script in database.migrations():  # looked up now: tests patch it
            async with self._raw_transaction() as raw:
                await raw.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await raw.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                )
                done = await raw.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", version
                )
                if done:
                    continue
                try:  # one round trip: a script without parameters may hold many statements
                    await raw.execute("\n;\n".join(postgres_schema(script)))
                except asyncpg.PostgresError as exc:
                    raise RuntimeError(f"database migration {name} failed: {exc}") from exc
                await raw.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    int(time.time()),
                )

    async def schema_version(self) -> int:
        """The newest migration applied."""
        row = await self.fetch_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require_pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "database not open"
        return self._pool

    @asynccontextmanager
    async def _raw_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._require_pool()
        raw = await _translated(pool.acquire(timeout=_ACQUIRE_TIMEOUT_S))
        try:
            tx = raw.transaction()
            await _translated(tx.start())
            try:
                yield raw
            except BaseException:
                with suppress(Exception):  # a dead connection has nothing to roll back
                    await tx.rollback()
                raise
            await _translated(tx.commit())
        finally:
            await pool.release(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._raw_transaction() as raw:
            yield PostgresConnection(raw)

    async def _read(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._require_pool()
        raw = await _translated(pool.acquire(timeout=_ACQUIRE_TIMEOUT_S))
        try:
            return await _translated(use(raw))
        finally:
            await pool.release(raw)

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        query, args = postgres_query(sql), tuple(params)
        row: Row | None = await self._read(lambda raw: raw.fetchrow(query, *args))
        return row

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        query, args = postgres_query(sql), tuple(params)
        rows: list[Row] = await self._read(lambda raw: raw.fetch(query, *args))
        return rows

    async def copy_records(
        self,
        table: str,
        columns: Sequence[str],
        records: Iterable[Sequence[Any]],
        *,
        skip_conflicts: bool = False,
    ) -> int:
        """PostgresConnection.copy_records in a transaction of its own."""
        async with self._raw_transaction() as raw:
            return await PostgresConnection(raw).copy_records(
                table, columns, records, skip_conflicts=skip_conflicts
            )


# mypy checks both against the protocols the stores are written to.
_database: type[Database] = PostgresDatabase
_connection: type[Connection] = PostgresConnection
