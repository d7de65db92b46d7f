"""A batch of checked rows as a small SQLite file: the importer's staging table.

The reader process (identity/import_reader) parses a batch and writes it here, one
`executemany` into a table without indexes, on its own core; the importer then moves the
whole batch with one statement and no Python per row: `INSERT … SELECT` from the attached
file into the run being gathered on SQLite (legacy_import), COPY of its rows into a
temporary table on PostgreSQL. Moving the per-row
binding out of the writer is what lets the import keep pace with a bare `executemany`
(docs/legacy-import.md "Speed").

The file is scratch: journal and fsync off (a killed import re-reads the batch from the
checkpoint's offset), removed by the importer once the batch is committed. At most two
exist at a time: the reader waits for the importer's acknowledgement of batch n before it
writes batch n + 2.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

from gateway.identity.import_source import STAGE_COLUMNS, Batch, RejectLine

STAGE_TABLE: Final = "r"  # STAGE_COLUMNS, one row per account, in file order (rowid 1, 2, …)


class Staged(NamedTuple):
    """A staged batch: its file, what the importer counts without reading it, and the rows
    refused while parsing (they never reach the file)."""

    path: str
    rows: int
    plans: int  # rows whose premium time becomes a plan at their first login
    own_quotas: int  # rows with their own free quota
    rejects: list[RejectLine]
    data_lines: int
    end_offset: int
    end_line: int

    def encode(self) -> bytes:
        return marshal.dumps((*self[:4], [tuple(r) for r in self.rejects], *self[5:]))

    @classmethod
    def decode(cls, data: bytes) -> Staged:
        path, rows, plans, own, rejects, *rest = marshal.loads(data)
        return cls(path, rows, plans, own, [RejectLine(*r) for r in rejects], *rest)


def stage(batch: Batch, path: Path) -> Staged:
    """Writes `batch` to a new staging file at `path`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        # No column types: values keep the types they were bound with.
        conn.execute(f"CREATE TABLE {STAGE_TABLE} ({', '.join(STAGE_COLUMNS)})")
        conn.execute("BEGIN")
        # The rows as they are: no per-row Python here either.
        conn.executemany(
            f"INSERT INTO {STAGE_TABLE} VALUES ({', '.join('?' * len(STAGE_COLUMNS))})",
            batch.rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Staged(
        str(path),
        len(batch.rows),
        batch.plans,
        batch.own_quotas,
        batch.rejects,
        batch.data_lines,
        batch.end_offset,
        batch.end_line,
    )


def staged_batches(
    batches: Iterable[Batch], directory: Path, wait_for_ack: Callable[[], None]
) -> Iterator[Staged]:
    """Stages each batch into `directory`; before writing batch n ≥ 2, waits until the
    importer acknowledged batch n - 2 (so at most two files exist)."""
    for n, batch in enumerate(batches):
        if n >= 2:
            wait_for_ack()
        path = directory / f"batch-{n}.sqlite3"
        path.unlink(missing_ok=True)
        yield stage(batch, path)


def read_stage(path: str) -> list[tuple[Any, ...]]:
    """A staged batch for COPY, in file order: rowid, then STAGE_COLUMNS."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f"SELECT rowid, {', '.join(STAGE_COLUMNS)} FROM {STAGE_TABLE} ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()


def remove(path: str) -> None:
    """Drops a staging file once its batch is committed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
