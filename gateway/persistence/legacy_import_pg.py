"""The legacy import's PostgreSQL database: each staged batch is COPYed into a temporary
table (`import_stage`, emptied at each commit), then merged into `legacy_accounts` sorted
by its primary key with one `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`; the
rejects and the checkpoint follow in the same transaction, so a killed import resumes
exactly as on SQLite.

The same statements as on SQLite (legacy_import), with PostgreSQL's placeholders
(dialect.postgres_query). The importer is synchronous; this runs asyncpg on an event loop
of its own, one connection, one transaction per batch. A temporary table is not written
to PostgreSQL's WAL: only the rows that reach `legacy_accounts` are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import asyncpg

from gateway.identity.import_source import STAGE_COLUMNS
from gateway.persistence.dialect import postgres_query
from gateway.persistence.import_stage import Staged, read_stage
from gateway.persistence.legacy_import import (
    DELETE_CHECKPOINT_SQL,
    FINISH_SQL,
    NEW_CHECKPOINT_SQL,
    READ_CHECKPOINT_SQL,
    SCHEMA_VERSION,
    ImportFailed,
)

T = TypeVar("T")
STAGE: Final = "import_stage"
LOSERS: Final = "import_lost"  # the batch's rows whose legacy id was taken
# The staging table: the row's place in the batch, then its columns (legacy_accounts'
# own types: BIGINT for integers).
_COLUMNS: Final = ("seq", *STAGE_COLUMNS)
_TYPES: Final = {
    "seq": "BIGINT",
    "created_at": "BIGINT",
    "premium_until": "BIGINT",
    "quota_bytes": "BIGINT",
    "plan_quota_bytes": "BIGINT",
    "line": "BIGINT",
    "byte_offset": "BIGINT",
    "length": "BIGINT",
}
_CREATE_STAGE: Final = (
    f"CREATE TEMPORARY TABLE {STAGE} ("
    + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in _COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)


def _count(status: str) -> int:
    """The row count of a command status such as "UPDATE 42"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresDb:
    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._conn: asyncpg.Connection = self._run(asyncpg.connect(url, timeout=10))
        except BaseException:
            self._loop.close()
            raise
        self._tx: Any = None
        try:
            found = self._run(
                self._conn.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", SCHEMA_VERSION
                )
            )
            if found is None:
                raise ImportFailed(f"database lacks migration {SCHEMA_VERSION}")
            self._run(self._conn.execute(_CREATE_STAGE))
            self._run(
                self._conn.execute(
                    f"CREATE TEMPORARY TABLE {LOSERS} (seq BIGINT PRIMARY KEY)"
                    " ON COMMIT DELETE ROWS"
                )
            )
        except BaseException:
            self.close()
            raise

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run_until_complete(call)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Nothing of the batch was committed: running the command again resumes.
            raise ImportFailed(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    def read_checkpoint(self, input_id: str) -> tuple[Any, ...] | None:
        return self.fetch_one(READ_CHECKPOINT_SQL, (input_id,))

    def new_checkpoint(self, params: tuple[Any, ...]) -> None:
        async def write() -> None:
            async with self._conn.transaction():
                await self._conn.execute(postgres_query(DELETE_CHECKPOINT_SQL), params[0])
                await self._conn.execute(postgres_query(NEW_CHECKPOINT_SQL), *params)

        self._run(write())

    def load(self, staged: Staged) -> None:
        """Begins the batch's transaction and COPYs its rows into the staging table."""
        rows = read_stage(staged.path)

        async def load() -> None:
            self._tx = self._conn.transaction()
            await self._tx.start()
            await self._conn.copy_records_to_table(STAGE, records=rows, columns=list(_COLUMNS))

        self._run(load())

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return _count(self._run(self._conn.execute(postgres_query(sql), *params)))

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._run(self._conn.executemany(postgres_query(sql), rows))

    def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(self._conn.fetch(postgres_query(sql), *params))]

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row = self._run(self._conn.fetchrow(postgres_query(sql), *params))
        return None if row is None else tuple(row)

    def commit(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            self._run(tx.commit())

    def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None and not self._conn.is_closed():
            self._run(tx.rollback())

    def finish(self, input_id: str) -> None:
        self.execute(FINISH_SQL, (int(time.time()), input_id))

    def close(self) -> None:
        try:
            if not self._conn.is_closed():
                self._run(self._conn.close(timeout=10))
        finally:
            self._loop.close()
