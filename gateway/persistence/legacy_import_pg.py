"""The legacy import's PostgreSQL target: each staged batch is COPYed into a temporary
table (`import_stage`, emptied at each commit), then moved into `accounts` with one
`INSERT … SELECT … ON CONFLICT DO NOTHING`; its subscriptions and the checkpoint follow in
the same transaction, so a killed import resumes exactly as on SQLite.

The same statements as the SQLite target (legacy_import), with PostgreSQL's placeholders
(dialect.postgres_query). The importer is synchronous; this target runs asyncpg on an event
loop of its own, one connection, one transaction per batch. A temporary table is not
written to PostgreSQL's WAL: only the rows that reach `accounts` are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import asyncpg

from gateway.identity.import_source import ROW_COLUMNS
from gateway.persistence.dialect import postgres_query
from gateway.persistence.import_stage import Staged, read_stage
from gateway.persistence.legacy_import import (
    CHECKPOINT_SQL,
    DELETE_CHECKPOINT_SQL,
    FINISH_SQL,
    NEW_CHECKPOINT_SQL,
    READ_CHECKPOINT_SQL,
    USERNAME_HOLDER_SQL,
    ImportFailed,
    stage_insert_sql,
    stage_left_out_sql,
    stage_own_quotas_sql,
    stage_plans_sql,
)

T = TypeVar("T")
STAGE: Final = "import_stage"
# The staging table's columns and types (accounts' own types: BIGINT for integers).
# The staging table: the row's place in the batch, its columns, its plan.
_COLUMNS: Final = ("seq", *ROW_COLUMNS, "plan_id", "plan_quota", "plan_ends")
_TYPES: Final = {
    "seq": "BIGINT",
    "api_key_hash": "BYTEA",
    "created_at": "BIGINT",
    "free_quota_bytes": "BIGINT",
    "legacy_premium_until": "BIGINT",
    "legacy_quota_bytes": "BIGINT",
    "plan_quota": "BIGINT",
    "plan_ends": "BIGINT",
}
_CREATE_STAGE: Final = (
    f"CREATE TEMPORARY TABLE {STAGE} ("
    + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in _COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_MIN_VERSION: Final = 4  # migrations up to 004_identities.sql


def _count(status: str) -> int:
    """The row count of a command status such as "INSERT 0 42"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresTarget:
    def __init__(self, url: str, now: int) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._conn: asyncpg.Connection = self._run(asyncpg.connect(url, timeout=10))
        except BaseException:
            self._loop.close()
            raise
        self._tx: Any = None
        self._insert = postgres_query(stage_insert_sql(STAGE, "seq", now))
        self._plans = {
            all_: postgres_query(stage_plans_sql(f"{STAGE} AS s", "s", now, all_))
            for all_ in (True, False)
        }
        self._own_quotas = postgres_query(stage_own_quotas_sql(STAGE))
        self._left_out = postgres_query(stage_left_out_sql(STAGE, "seq"))
        try:
            version = self._run(
                self._conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            )
            if version < _MIN_VERSION:
                raise ImportFailed(f"database at version {version}, needs {_MIN_VERSION}")
            self._run(self._conn.execute(_CREATE_STAGE))
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
        row = self._run(self._conn.fetchrow(postgres_query(READ_CHECKPOINT_SQL), input_id))
        return None if row is None else tuple(row)

    def new_checkpoint(self, params: tuple[Any, ...]) -> None:
        async def write() -> None:
            async with self._conn.transaction():
                await self._conn.execute(postgres_query(DELETE_CHECKPOINT_SQL), params[0])
                await self._conn.execute(postgres_query(NEW_CHECKPOINT_SQL), *params)

        self._run(write())

    def load(self, staged: Staged) -> int:
        rows = read_stage(staged.path)

        async def load() -> int:
            self._tx = self._conn.transaction()
            await self._tx.start()
            await self._conn.copy_records_to_table(STAGE, records=rows, columns=list(_COLUMNS))
            return _count(await self._conn.execute(self._insert))

        return self._run(load())

    def left_out(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(self._conn.fetch(self._left_out))]

    def username_holder(self, tenant: str, username_norm: str) -> tuple[Any, ...] | None:
        row = self._run(
            self._conn.fetchrow(postgres_query(USERNAME_HOLDER_SQL), tenant, username_norm)
        )
        return None if row is None else tuple(row)

    def add_plans(self, all_inserted: bool) -> int:
        return _count(self._run(self._conn.execute(self._plans[all_inserted])))

    def own_quotas_added(self) -> int:
        return int(self._run(self._conn.fetchval(self._own_quotas)))

    def save_checkpoint(self, params: tuple[Any, ...]) -> None:
        self._run(self._conn.execute(postgres_query(CHECKPOINT_SQL), *params))

    def commit(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            self._run(tx.commit())

    def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None and not self._conn.is_closed():
            self._run(tx.rollback())

    def finish(self, input_id: str) -> None:
        self._run(self._conn.execute(postgres_query(FINISH_SQL), int(time.time()), input_id))

    def close(self) -> None:
        try:
            if not self._conn.is_closed():
                self._run(self._conn.close(timeout=10))
        finally:
            self._loop.close()
