"""A batch of checked rows as a small SQLite file: the importer's staging table.

The reader process (identity/import_reader) parses a batch and writes it here, one
`executemany` into a table without indexes, on its own core; the importer then moves the
whole batch with one statement and no Python per row: `INSERT … SELECT` from the attached
file on SQLite, COPY of its rows into a temporary table on PostgreSQL. Moving the per-row
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
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Final, NamedTuple

from gateway.identity.import_source import FREE_QUOTA, ROW_COLUMNS, Batch, RejectLine

STAGE_TABLE: Final = "r"  # ROW_COLUMNS, one row per account, in file order (rowid 1, 2, …)
PLAN_TABLE: Final = "p"  # the subscriptions premium rows become: PLAN_COLUMNS
PLAN_COLUMNS: Final = ("idx", "plan_id", "plan_quota", "plan_ends")  # idx: the row's rowid


class Staged(NamedTuple):
    """A staged batch: its file, what the importer counts without reading it, where each
    row came from, and the rows refused while parsing (they never reach the file)."""

    path: str
    rows: int
    plans: int  # rows with a subscription to add
    own_quotas: int  # rows with their own free quota
    # (line, byte offset, length) of row i (rowid i + 1) at [3i, 3i + 3), as int64s: read
    # only when the database refuses a row, to write its reject line.
    spans: bytes
    rejects: list[RejectLine]
    data_lines: int
    end_offset: int
    end_line: int

    def encode(self) -> bytes:
        return marshal.dumps((*self[:5], [tuple(r) for r in self.rejects], *self[6:]))

    @classmethod
    def decode(cls, data: bytes) -> Staged:
        path, rows, plans, own, spans, rejects, *rest = marshal.loads(data)
        return cls(path, rows, plans, own, spans, [RejectLine(*r) for r in rejects], *rest)

    def span(self, rowid: int) -> tuple[int, int, int]:
        """(line, byte offset, length) of the row with this rowid in the staging table."""
        at = (rowid - 1) * 24
        line, offset, length = struct.unpack_from("=3q", self.spans, at)
        return line, offset, length


def stage(batch: Batch, path: Path) -> Staged:
    """Writes `batch` to a new staging file at `path`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        # No column types: values keep the types they were bound with.
        conn.execute(f"CREATE TABLE {STAGE_TABLE} ({', '.join(ROW_COLUMNS)})")
        conn.execute(f"CREATE TABLE {PLAN_TABLE} ({', '.join(PLAN_COLUMNS)})")
        conn.execute("BEGIN")
        # The rows as they are: no per-row Python here either.
        conn.executemany(
            f"INSERT INTO {STAGE_TABLE} VALUES ({', '.join('?' * len(ROW_COLUMNS))})",
            batch.rows,
        )
        conn.executemany(
            f"INSERT INTO {PLAN_TABLE} VALUES (?1 + 1, ?2, ?3, ?4)",  # index → rowid
            batch.premium,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    own = sum(1 for row in batch.rows if row[FREE_QUOTA] is not None)
    return Staged(
        str(path),
        len(batch.rows),
        len(batch.premium),
        own,
        array("q", chain.from_iterable(batch.spans)).tobytes(),
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
    """A staged batch for COPY, in file order: rowid, ROW_COLUMNS, then the row's plan
    (plan_id, plan_quota, plan_ends; NULLs when none)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f"SELECT r.rowid, {', '.join('r.' + c for c in ROW_COLUMNS)}, p.plan_id,"
            f" p.plan_quota, p.plan_ends FROM {STAGE_TABLE} AS r"
            f" LEFT JOIN {PLAN_TABLE} AS p ON p.idx = r.rowid ORDER BY r.rowid"
        ).fetchall()
    finally:
        conn.close()


def remove(path: str) -> None:
    """Drops a staging file once its batch is committed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
