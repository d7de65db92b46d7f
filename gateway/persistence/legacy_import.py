"""The legacy import engine: export file → dormant restored accounts, resumable, idempotent.

A restored account that never logged in is a row of `legacy_accounts` (migration 014,
primary key (tenant_id, username_norm), the old record in a few columns) and one of
`legacy_ids` (legacy_id → that key). No `accounts` row, API key placeholder or
subscription until its first login promotes it (persistence/logins.promote).

- A reader process (identity/import_reader) reads and checks the file on the second core
  and writes each batch to a staging file (import_stage); this process moves each batch
  with one `INSERT … SELECT` and no Python per row. At most two staging files exist.
- Speed comes from order, not from a big page cache. Rows arrive in the file's order, i.e.
  random in both keys: inserted as they come, each lands on another leaf of a tree that
  soon outgrows the cache. On SQLite each batch is therefore appended to an unindexed
  scratch table (the open run); every `run_rows` rows (or half the rows stored, if more)
  the run is sorted twice, by legacy_id and by (tenant_id, username_norm), into a scratch
  file of its own (outside any transaction of the database: no write lock, no WAL), and
  merged a slice per following
  batch: phase 1 into legacy_ids, phase 2 into legacy_accounts, each in its key order, so
  consecutive inserts hit the same leaf and a leaf is written once per slice. On
  PostgreSQL each batch is COPYed into a temporary table and merged, sorted, straight away
  (legacy_import_pg).
- Each batch is one transaction: the rows appended, the slice merged, their rejects (the
  reject file's length) and the checkpoint (byte offset, line, counts, the run's last row
  and the next position of its merge). A killed import sorts the run again from its rows
  (the same order: ties by rowid), goes on with the merge, and reads on from the offset
  with `seek()`; the reject file is cut back to the checkpoint's length; the final counts
  are exact.
- Conflicts are found by the constraints, not by lookups: both phases are `INSERT … ON
  CONFLICT DO NOTHING RETURNING`, guarded against names and legacy ids that promoted
  accounts hold. When one returns fewer rows than it was given, each row left out is told
  apart: already imported with the same data (a re-run: fine), its legacy_id stored with
  different data (reported, never overwritten), or its username taken in its tenant
  (reported; names compare normalised). Within a run the row earliest in the file keeps
  a legacy_id, and of the rows left with it a name.
- SQLite through sqlite3 directly, not aiosqlite: a few calls per batch. Safe beside a
  running gateway on the same WAL database: BEGIN IMMEDIATE with a busy timeout; a batch
  with its slice holds the write lock well under a second.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

import orjson

from gateway.identity.import_reader import FRAME_HEADER
from gateway.identity.import_rows import CsvFormat
from gateway.identity.import_source import (
    LEGACY_ID,
    LINE,
    ROW_COLUMNS,
    STAGE_COLUMNS,
    TENANT_ID,
    USERNAME_NORM,
    RejectLine,
    TenantPolicy,
    detect_format,
    input_identity,
    read_batches,
)
from gateway.persistence.import_stage import STAGE_TABLE, Staged, remove, staged_batches

SCHEMA_VERSION: Final = 14  # migrations up to 014_legacy_accounts.sql
# Checkpoint the WAL by hand once it passes this size, instead of SQLite's automatic
# checkpoint at every commit past 4 MB: a page that several batches write (the leaves a
# merge slice touches, the scratch tables' tails) is then copied back once.
WAL_CHECKPOINT_BYTES: Final = 256 << 20
DEFAULT_RUN_ROWS: Final = 4_000_000
SORTED: Final = "sorted"  # the schema name of the attached file holding a closed run sorted


def plain_insert_sql(now: int) -> str:
    """The INSERT of one row (ROW_COLUMNS parameters) as a plain batched INSERT runs it:
    bench/import.py's baseline; `now` is the import's time."""
    values = [
        f"COALESCE(?{i}, {int(now)})" if column == "created_at" else f"?{i}"
        for i, column in enumerate(ROW_COLUMNS, 1)
    ]
    return (
        f"INSERT INTO legacy_accounts ({', '.join(ROW_COLUMNS)}, imported_at)"
        f" VALUES ({', '.join(values)}, {int(now)})"
    )


def ids_merge_sql(source: str, seq: str, order: str) -> str:
    """Phase 1 of a merge: the legacy ids of the rows of `source` with `seq` between ?1 and
    ?2 into legacy_ids in `order` (legacy_id, then file order: of two rows with one
    legacy_id the earlier in the file wins); returns the legacy ids added."""
    return (
        "INSERT INTO legacy_ids (legacy_id, tenant_id, username_norm)"
        f" SELECT s.legacy_id, s.tenant_id, s.username_norm FROM {source} AS s"
        f" WHERE s.{seq} BETWEEN ?1 AND ?2"
        " AND NOT EXISTS (SELECT 1 FROM accounts AS a WHERE a.legacy_id = s.legacy_id)"
        f" ORDER BY {order} ON CONFLICT DO NOTHING RETURNING legacy_id"
    )


def ids_rows_sql(source: str, seq: str, order: str) -> str:
    """(legacy_id, seq) of the rows ids_merge_sql was given, in its order."""
    return (
        f"SELECT s.legacy_id, s.seq FROM {source} AS s"
        f" WHERE s.{seq} BETWEEN ?1 AND ?2 ORDER BY {order}"
    )


def merge_sql(source: str, seq: str, order: str, losers: str, now: int) -> str:
    """Phase 2: the rows of `source` (seq, STAGE_COLUMNS) with `seq` between ?1 and ?2
    into legacy_accounts in `order` (the primary key's), but those that lost their legacy
    id in phase 1 (`losers`) or whose name a promoted account holds; returns what is
    counted of each row added."""
    values = [
        f"COALESCE(s.{column}, {int(now)})" if column == "created_at" else f"s.{column}"
        for column in ROW_COLUMNS
    ]
    return (
        f"INSERT INTO legacy_accounts ({', '.join(ROW_COLUMNS)}, imported_at)"
        f" SELECT {', '.join(values)}, {int(now)} FROM {source} AS s"
        f" WHERE s.{seq} BETWEEN ?1 AND ?2"
        f" AND s.seq NOT IN (SELECT seq FROM {losers})"
        " AND NOT EXISTS (SELECT 1 FROM accounts AS a"
        " WHERE a.tenant_id = s.tenant_id AND a.username_norm = s.username_norm)"
        f" ORDER BY {order} ON CONFLICT DO NOTHING"
        " RETURNING legacy_id, tenant_id, username_norm, quota_bytes, plan_id"
    )


def slice_rows_sql(source: str, seq: str, order: str) -> str:
    """The rows merge_sql was given (seq, STAGE_COLUMNS), in its order."""
    columns = ", ".join(f"s.{c}" for c in ("seq", *STAGE_COLUMNS))
    return f"SELECT {columns} FROM {source} AS s WHERE s.{seq} BETWEEN ?1 AND ?2 ORDER BY {order}"


def losers_rows_sql(source: str, losers: str) -> str:
    """The rows (seq, STAGE_COLUMNS) that lost their legacy id in phase 1, in file order."""
    columns = ", ".join(f"s.{c}" for c in ("seq", *STAGE_COLUMNS))
    return (
        f"SELECT {columns} FROM {source} AS s"
        f" WHERE s.seq IN (SELECT seq FROM {losers}) ORDER BY s.seq"
    )


# What is compared to tell a re-run's row from a changed one, as stored for a dormant
# account and for a promoted one (which keeps the old record beside its new login).
STORED_SQL: Final = (
    "SELECT l.tenant_id, l.created_at, l.username, l.email, l.legacy_scheme, l.legacy_hash,"
    " l.premium_until, l.quota_bytes FROM legacy_ids AS i JOIN legacy_accounts AS l"
    " ON l.tenant_id = i.tenant_id AND l.username_norm = i.username_norm"
    " WHERE i.legacy_id = ?1"
    " UNION ALL SELECT tenant_id, created_at, username, email, legacy_scheme, legacy_hash,"
    " legacy_premium_until, legacy_quota_bytes FROM accounts WHERE legacy_id = ?1"
)
USERNAME_HOLDER_SQL: Final = (
    "SELECT legacy_id FROM legacy_accounts WHERE tenant_id = ?1 AND username_norm = ?2"
    " UNION ALL SELECT legacy_id FROM accounts WHERE tenant_id = ?1 AND username_norm = ?2"
)
DROP_LEGACY_ID_SQL: Final = (
    "DELETE FROM legacy_ids WHERE legacy_id = ? AND tenant_id = ? AND username_norm = ?"
)
CHECKPOINT_SQL: Final = (
    "UPDATE import_checkpoints SET byte_offset = ?, line = ?, rows_read = ?,"
    " inserted = ?, present = ?, rejected = ?, plans = ?, own_quotas = ?,"
    " rejects_bytes = ?, merged = ?, run_end = ?, updated_at = ? WHERE input_id = ?"
)
READ_CHECKPOINT_SQL: Final = (
    "SELECT byte_offset, line, rows_read, inserted, present, rejected, plans, own_quotas,"
    " rejects_bytes, merged, run_end, finished_at FROM import_checkpoints WHERE input_id = ?"
)
DELETE_CHECKPOINT_SQL: Final = "DELETE FROM import_checkpoints WHERE input_id = ?"
NEW_CHECKPOINT_SQL: Final = (
    "INSERT INTO import_checkpoints (input_id, path, size, byte_offset, line,"
    " rejects_path, started_at, updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)"
)
FINISH_SQL: Final = "UPDATE import_checkpoints SET finished_at = ? WHERE input_id = ?"

# (field, its index in a staged row, its index in a STORED_SQL row), for "same data?".
_COMPARED: Final = tuple(
    (name, STAGE_COLUMNS.index(column), stored)
    for name, column, stored in (
        ("tenant", "tenant_id", 0),
        ("created_at", "created_at", 1),
        ("username", "username", 2),
        ("email", "email", 3),
        ("password", "legacy_scheme", 4),
        ("password", "legacy_hash", 5),
        ("premium_until", "premium_until", 6),
        ("quota_bytes", "quota_bytes", 7),
    )
)
_STORED_SCHEME: Final = 4
_SPAN: Final = slice(len(ROW_COLUMNS), len(STAGE_COLUMNS))


class ImportFailed(Exception):
    """The import cannot go on (unreadable file, database not migrated, reader died)."""


@dataclass(frozen=True)
class ImportOptions:
    path: Path
    db_path: Path  # the SQLite database (unused when database_url is PostgreSQL's)
    policies: dict[str, TenantPolicy]
    rejects_path: Path
    fmt: str | None = None  # "jsonl" or "csv"; None: detect
    batch_rows: int = 50_000
    cache_mib: int = 256
    from_start: bool = False  # ignore the checkpoint, read the whole file again
    parse_in_child: bool = True
    run_rows: int = DEFAULT_RUN_ROWS  # SQLite: rows sorted together before merging
    database_url: str | None = None  # postgresql://…: import into PostgreSQL


@dataclass
class Counts:
    rows: int = 0  # data lines read (a CSV header and blank lines are not rows)
    inserted: int = 0
    present: int = 0  # already imported with the same data
    rejected: int = 0
    plans: int = 0  # with premium time ahead: a plan at the first login
    own_quotas: int = 0

    @property
    def settled(self) -> int:
        """Rows stored, found present or rejected; the others read so far wait in a run."""
        return self.inserted + self.present + self.rejected


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    bytes_at_start: int  # where this run started (a resumed run starts past 0)
    counts: Counts
    rows_this_run: int
    elapsed_s: float
    settled_at_start: int = 0  # counts.settled when this run started

    @property
    def rows_per_s(self) -> float:
        """Rows read per second in this run."""
        return self.rows_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def settled_per_s(self) -> float:
        settled = self.counts.settled - self.settled_at_start
        return settled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left: reading at this run's byte rate, and settling the rows the file
        holds (estimated from its bytes) at this run's rate, whichever ends later. Runs
        are merged behind the reading, so the last one is merged after the file's end."""
        done = self.bytes_done - self.bytes_at_start
        if done <= 0 or self.elapsed_s <= 0:
            return None
        reading = (self.bytes_total - self.bytes_done) * self.elapsed_s / done
        rate = self.settled_per_s
        if rate <= 0 or self.bytes_done <= 0:
            return reading
        rows_total = self.counts.rows * self.bytes_total / self.bytes_done
        return max(reading, (rows_total - self.counts.settled) / rate)


@dataclass
class ImportResult:
    input_id: str
    counts: Counts
    kinds: Counter[str] = field(default_factory=Counter)  # rejects of this run, by kind
    already_done: bool = False  # the checkpoint said this file was imported in full
    resumed_at_line: int = 0  # > 0 when this run continued a killed one
    rows_this_run: int = 0
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def tune_sqlite(conn: sqlite3.Connection, cache_mib: int) -> None:
    """The import's connection settings, safe against kill -9: WAL with synchronous=NORMAL
    loses no committed transaction when the process dies (only on power loss); the page
    cache holds the hot index pages; the WAL is checkpointed by checkpoint_wal."""
    conn.execute("PRAGMA journal_mode=WAL")  # the gateway's mode; a no-op when already set
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # Cut the WAL file back to nothing when it restarts after a full checkpoint, so that
    # its size says how much is waiting to be checkpointed (else it stays at its peak).
    conn.execute("PRAGMA journal_size_limit=0")


def checkpoint_wal(conn: sqlite3.Connection, db_path: Path, force: bool = False) -> None:
    """Copies the WAL back into the database once it passed WAL_CHECKPOINT_BYTES (PASSIVE:
    never waits for the gateway's readers; what they hold is copied next time)."""
    try:
        size = os.stat(f"{db_path}-wal").st_size
    except FileNotFoundError:
        return
    if force or size > WAL_CHECKPOINT_BYTES:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


class Db(Protocol):
    """The database an import writes to: one connection, one transaction at a time."""

    def read_checkpoint(self, input_id: str) -> tuple[Any, ...] | None: ...
    def new_checkpoint(self, params: tuple[Any, ...]) -> None: ...
    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int: ...
    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...
    def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...
    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def finish(self, input_id: str) -> None: ...
    def close(self) -> None: ...


def _sanitize(reason: str) -> str:
    return reason.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _differences(row: tuple[Any, ...], stored: tuple[Any, ...]) -> list[str]:
    """Names of the fields where an incoming row differs from the stored account."""
    upgraded = stored[_STORED_SCHEME] is None  # the first login replaced the legacy password
    names = []
    for name, r, s in _COMPARED:
        if name == "password" and upgraded:
            continue
        if name == "created_at" and row[r] is None:  # absent: stored as the import time
            continue
        if row[r] != stored[s] and name not in names:
            names.append(name)
    return names


def _raw(fd: int, row: tuple[Any, ...]) -> bytes:
    _, offset, length = row[_SPAN]
    return os.pread(fd, length, offset)


class _Merger:
    """Merges a range of staged rows in two phases, and tells apart the rows left out; the
    counts and reject kinds it keeps are the import's.

    Phase 1 adds the legacy ids to legacy_ids, sorted by legacy_id; the rows whose legacy
    id was there already (or earlier in the range) are noted in a losers table. Phase 2
    adds the other rows to legacy_accounts, sorted by (tenant_id, username_norm); a row
    whose name is taken gives its legacy id back. Then the losers are told apart: the same
    data as stored (a re-run), or a changed record."""

    def __init__(
        self,
        db: Db,
        input_fd: int,
        policies: dict[str, TenantPolicy],
        counts: Counts,
        kinds: Counter[str],
    ) -> None:
        self.db = db
        self.input_fd = input_fd
        self.policies = policies
        self.counts = counts
        self.kinds = kinds

    def merge_ids(self, insert_sql: str, rows_sql: str, losers: str, lo: int, hi: int) -> None:
        added = self.db.fetch_all(insert_sql, (lo, hi))
        if len(added) == hi - lo + 1:
            return
        got = Counter(legacy_id for (legacy_id,) in added)
        lost = []
        for legacy_id, seq in self.db.fetch_all(rows_sql, (lo, hi)):
            if got[legacy_id] > 0:  # the first of its legacy id in this order: added
                got[legacy_id] -= 1
            else:
                lost.append((seq,))
        self.db.execute_many(f"INSERT INTO {losers} (seq) VALUES (?)", lost)

    def merge_rows(
        self, insert_sql: str, rows_sql: str, losers: str, lo: int, hi: int
    ) -> list[RejectLine]:
        """Phase 2 for rows lo..hi; the reject lines of rows whose name is taken.
        `rows_sql` reads the same rows in the order `insert_sql` inserts them."""
        added = self.db.fetch_all(insert_sql, (lo, hi))
        counts = self.counts
        counts.inserted += len(added)
        for _, tenant, _, quota, plan_id in added:
            counts.plans += plan_id is not None
            policy = self.policies.get(tenant)
            counts.own_quotas += (
                quota is not None and policy is not None and quota > policy.free_quota_bytes
            )
        if len(added) == hi - lo + 1:
            return []
        lost = {seq for (seq,) in self.db.fetch_all(f"SELECT seq FROM {losers}", ())}
        # Which rows were added: a multiset of keys, consumed in insertion order, so that
        # of two identical rows the one inserted is the one skipped here.
        got = Counter((legacy_id, tenant, norm) for legacy_id, tenant, norm, _, _ in added)
        rejects = []
        for found in self.db.fetch_all(rows_sql, (lo, hi)):
            seq, row = found[0], found[1:]
            key = (row[LEGACY_ID], row[TENANT_ID], row[USERNAME_NORM])
            if seq in lost:
                continue
            if got[key] > 0:
                got[key] -= 1
                continue
            self.db.execute(DROP_LEGACY_ID_SQL, key)  # phase 1 gave it this row
            tenant = row[TENANT_ID]
            holder = self.db.fetch_one(USERNAME_HOLDER_SQL, (tenant, row[USERNAME_NORM]))
            if holder is not None:
                kind = "duplicate-username"
                owner = f"legacy_id {holder[0]}" if holder[0] else "an existing account"
                reason = f"username taken in tenant {tenant} by {owner}"
            else:  # taken and freed again meanwhile (a concurrent login): harmless to retry
                kind = "retry"
                reason = "not stored (changed meanwhile); import the reject file again"
            rejects.append(self._reject(row, kind, reason))
        return rejects

    def classify_losers(self, rows_sql: str, losers: str) -> list[RejectLine]:
        """After phase 2 of a whole range: the rows that lost their legacy id, each the
        same as stored (counted present) or a reject; the losers table emptied."""
        rejects = []
        for found in self.db.fetch_all(rows_sql, ()):
            row = found[1:]
            stored = self.db.fetch_one(STORED_SQL, (row[LEGACY_ID],))
            if stored is None:  # its first row in the file was refused (e.g. its name)
                kind = "retry"
                reason = "legacy_id's earlier row was refused; import the reject file again"
            elif differing := _differences(row, stored):
                kind = "conflict"
                reason = f"legacy_id exists with different data: {', '.join(differing)}"
            else:
                self.counts.present += 1
                continue
            rejects.append(self._reject(row, kind, reason))
        self.db.execute(f"DELETE FROM {losers}")
        return rejects

    def _reject(self, row: tuple[Any, ...], kind: str, reason: str) -> RejectLine:
        self.kinds[kind] += 1
        self.counts.rejected += 1
        return RejectLine(row[LINE], kind, reason, _raw(self.input_fd, row))


class _Run:
    """Where the import stands beside the counts: the file position after the last
    committed batch and the next row of the sorted run to merge (0: none)."""

    def __init__(self, offset: int, line: int, merged: int, run_end: int) -> None:
        self.offset = offset
        self.line = line
        self.merged = merged
        self.run_end = run_end  # SQLite: the last open-run rowid of the closed run


def _checkpoint_params(
    counts: Counts, rejects_bytes: int, run: _Run, input_id: str
) -> tuple[Any, ...]:
    return (
        run.offset,
        run.line,
        counts.rows,
        counts.inserted,
        counts.present,
        counts.rejected,
        counts.plans,
        counts.own_quotas,
        rejects_bytes,
        run.merged,
        run.run_end,
        int(time.time()),
        input_id,
    )


class SqliteDb:
    """The gateway's SQLite database through sqlite3 (autocommit; BEGIN by hand)."""

    def __init__(self, db_path: Path, cache_mib: int) -> None:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        try:
            found = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (SCHEMA_VERSION,)
            ).fetchone()
        except sqlite3.OperationalError:
            found = None
        if found is None:
            conn.close()
            raise ImportFailed(f"{db_path}: database lacks migration {SCHEMA_VERSION}")
        tune_sqlite(conn, cache_mib)
        # Sorting a run may pass the page cache: spill to a file, not to memory.
        conn.execute("PRAGMA temp_store=FILE")
        self.conn = conn
        self.db_path = db_path

    def read_checkpoint(self, input_id: str) -> tuple[Any, ...] | None:
        return self.fetch_one(READ_CHECKPOINT_SQL, (input_id,))

    def new_checkpoint(self, params: tuple[Any, ...]) -> None:
        self.begin()
        self.conn.execute(DELETE_CHECKPOINT_SQL, (params[0],))
        self.conn.execute(NEW_CHECKPOINT_SQL, params)
        self.commit()

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Runs `sql`; how many rows it changed."""
        before = self.conn.total_changes
        self.conn.execute(sql, params)
        return self.conn.total_changes - before

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(sql, rows)

    def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        checkpoint_wal(self.conn, self.db_path)

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def finish(self, input_id: str) -> None:
        self.conn.execute(FINISH_SQL, (int(time.time()), input_id))
        checkpoint_wal(self.conn, self.db_path, force=True)

    def close(self) -> None:
        self.conn.close()


class _SqliteImport:
    """The SQLite import: batches appended to the open run, runs sorted and merged.

    Durable scratch tables, named after the input so imports of two files do not meet:
    `import_open_<id>` (rows in file order, rowid = seq; a closed run's rows stay until it
    is merged: rowid <= run_end) and `import_lost_<id>` (phase 1's losers). A closed run is
    sorted into two tables of a scratch file of its own (`sorted`, attached; no journal),
    outside any transaction of the database (no write lock, no WAL: rebuilt from the open
    table after a kill, in the same order), and dropped by deleting that file, which costs
    nothing, where dropping a table frees its pages one by one:
    `import_ids_<id>` (legacy_id, tenant_id, username_norm, seq sorted by legacy_id, seq)
    and `import_run_<id>` (seq, STAGE_COLUMNS sorted by tenant_id, username_norm, seq). A
    run of n rows is merged in positions 1..2n: 1..n are rowids of the ids table (phase
    1), n+1..2n those of the run table (phase 2)."""

    def __init__(
        self,
        db: SqliteDb,
        input_id: str,
        opts: ImportOptions,
        now: int,
        run: _Run,
        scratch_dir: Path,
    ) -> None:
        self.db = db
        self.run_rows = max(1, opts.run_rows)
        self.slice_rows = max(1, opts.batch_rows)
        tag = input_id[:16]
        self.open_table = f"import_open_{tag}"
        self.sorted_path = scratch_dir / f"sorted-{tag}.sqlite3"
        self.ids_table = f"{SORTED}.import_ids_{tag}"
        self.run_table = f"{SORTED}.import_run_{tag}"
        self.losers = f"import_lost_{tag}"
        # The closed run's tables are in key order already: rowid order needs no sort.
        self.ids_insert = ids_merge_sql(self.ids_table, "rowid", "s.rowid")
        self.ids_rows = ids_rows_sql(self.ids_table, "rowid", "s.rowid")
        self.insert = merge_sql(self.run_table, "rowid", "s.rowid", self.losers, now)
        self.rows = slice_rows_sql(self.run_table, "rowid", "s.rowid")
        self.losers_rows = losers_rows_sql(self.run_table, self.losers)
        self.attached = False
        self.sorted_attached = False
        conn = db.conn
        if run.offset == 0 and run.merged == 0:  # left by a start over of this file
            self.drop_scratch()
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self.open_table} ({', '.join(STAGE_COLUMNS)})")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self.losers} (seq INTEGER PRIMARY KEY)")
        beyond = run.run_end if run.merged else 0
        self.open_rows = int(
            conn.execute(
                f"SELECT count(*) FROM {self.open_table} WHERE rowid > ?", (beyond,)
            ).fetchone()[0]
        )
        self.run_len = self._sort(run.run_end) if run.merged else 0

    def drop_scratch(self) -> None:
        for table in (self.open_table, self.losers):
            self.db.conn.execute(f"DROP TABLE IF EXISTS main.{table}")

    def _drop_sorted(self) -> None:
        """Deletes the sorted tables' file (outside a transaction: DETACH needs that)."""
        if self.sorted_attached:
            self.db.conn.execute(f"DETACH DATABASE {SORTED}")
            self.sorted_attached = False
        self.sorted_path.unlink(missing_ok=True)

    def _sort(self, run_end: int) -> int:
        """The open table's rows up to `run_end` sorted into a new sorted file's tables
        (SQLite's external merge sort), the last run's file deleted first; how many rows."""
        conn = self.db.conn
        self._drop_sorted()
        conn.execute(f"ATTACH DATABASE ? AS {SORTED}", (str(self.sorted_path),))
        self.sorted_attached = True
        # Scratch: rebuilt after a kill, so neither journal nor fsync.
        conn.execute(f"PRAGMA {SORTED}.journal_mode=OFF")
        conn.execute(f"PRAGMA {SORTED}.synchronous=OFF")
        conn.execute(
            f"CREATE TABLE {self.ids_table} AS SELECT legacy_id, tenant_id, username_norm,"
            f" rowid AS seq FROM main.{self.open_table} WHERE rowid <= ?"
            " ORDER BY legacy_id, rowid",
            (run_end,),
        )
        conn.execute(
            f"CREATE TABLE {self.run_table} AS SELECT rowid AS seq, *"
            f" FROM main.{self.open_table} WHERE rowid <= ?"
            " ORDER BY tenant_id, username_norm, rowid",
            (run_end,),
        )
        last = conn.execute(f"SELECT max(rowid) FROM {self.run_table}").fetchone()[0]
        return int(last or 0)

    def _slice(self, merger: _Merger, run: _Run) -> list[RejectLine]:
        """Merges the next slice of the closed run, inside the caller's transaction."""
        n, pos = self.run_len, run.merged
        rejects = []
        if pos <= n:
            hi = min(pos + self.slice_rows - 1, n)
            merger.merge_ids(self.ids_insert, self.ids_rows, self.losers, pos, hi)
        else:
            lo = pos - n
            hi = n + min(lo + self.slice_rows - 1, n)
            rejects = merger.merge_rows(self.insert, self.rows, self.losers, lo, hi - n)
        if hi < 2 * n:
            run.merged = hi + 1
            return rejects
        rejects += merger.classify_losers(self.losers_rows, self.losers)
        self.db.conn.execute(f"DELETE FROM main.{self.open_table} WHERE rowid <= ?", (run.run_end,))
        run.merged = self.run_len = 0
        return rejects

    def run_full(self, counts: Counts) -> bool:
        """Whether the open run is to be closed: at `run_rows`, or at half the rows this
        import stored if more. A slice of a run of n rows spans 1/(n/slice) of the key
        space and rewrites the leaves of that share of the tables, so with runs of a fixed
        size the pages written per row grow with the tables; runs that grow with them
        keep that in bounds."""
        return self.open_rows >= max(self.run_rows, (counts.inserted + counts.present) // 2)

    def append(self, staged: Staged, merger: _Merger, run: _Run) -> list[RejectLine]:
        """Begins the batch's transaction: the batch appended to the open run, and the
        next slice of the closed run (if any) merged; the merge's rejects. `detach`
        once the transaction ended."""
        self.db.conn.execute("ATTACH DATABASE ? AS stage", (staged.path,))
        self.attached = True
        self.db.begin()
        self.db.conn.execute(
            f"INSERT INTO main.{self.open_table} SELECT * FROM stage.{STAGE_TABLE}"
        )
        self.open_rows += staged.rows
        return self._slice(merger, run) if run.merged else []

    def detach(self) -> None:
        if self.attached:
            self.db.conn.execute("DETACH DATABASE stage")
            self.attached = False

    def slice_pending(self, merger: _Merger, run: _Run) -> list[RejectLine]:
        """Begins a transaction: the next slice of the closed run merged."""
        self.db.begin()
        return self._slice(merger, run)

    def close_run(self, run: _Run) -> None:
        """Sorts the open run (no transaction of the database: the sort only reads it),
        then begins the transaction that records it closed."""
        assert run.merged == 0
        last = self.db.conn.execute(f"SELECT max(rowid) FROM main.{self.open_table}")
        run_end = int(last.fetchone()[0] or 0)
        self.run_len = self._sort(run_end)
        self.db.begin()
        run.run_end, run.merged = run_end, 1 if self.run_len else 0
        self.open_rows = 0

    def finish(self) -> None:
        """Drops the scratch tables: the sorted ones first, then (inside a transaction of
        its own) the open run and the losers."""
        self._drop_sorted()
        self.db.begin()
        self.drop_scratch()


class _RejectFile:
    """The reject file: `line<TAB>reason<TAB>raw` per refused row, cut back on resume."""

    def __init__(self, path: Path, keep_bytes: int, warnings: list[str]) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # raw rows hold password hashes
        self._fh: BinaryIO = os.fdopen(fd, "r+b")
        size = os.fstat(fd).st_size
        if size < keep_bytes:
            warnings.append(
                f"{path} is shorter than at the checkpoint; rejects before it are missing"
            )
        self._fh.truncate(min(size, keep_bytes))
        self._fh.seek(0, os.SEEK_END)

    def write(self, rejects: list[RejectLine]) -> int:
        """Appends the lines, durable on disk; the file's length after them."""
        if rejects:
            for r in sorted(rejects):
                self._fh.write(b"%d\t%s\t" % (r.line, _sanitize(r.reason).encode()) + r.raw + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


def _staged_from_reader(job: dict[str, Any]) -> Iterator[Staged]:
    """Batches staged by a reader process (import_reader); each is acknowledged when the
    caller asks for the next one, i.e. once it has committed it."""
    env = dict(os.environ)
    # The reader must run this very code, wherever the command was started from.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.identity.import_reader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(orjson.dumps(job) + b"\n")  # TenantPolicy dataclasses become objects
        proc.stdin.flush()
        while True:
            header = proc.stdout.read(FRAME_HEADER)
            size = int.from_bytes(header, "big")
            frame = proc.stdout.read(size)
            if len(header) != FRAME_HEADER or len(frame) != size:
                raise ImportFailed("the file reader stopped unexpectedly")
            if not frame:
                return
            if frame.startswith(b"!"):
                raise ImportFailed(f"reading the file failed: {frame[1:].decode()}")
            try:
                staged = Staged.decode(frame)
            except (ValueError, EOFError, TypeError):
                # Seen only with the process under `py-spy --native` (ptrace): nothing
                # of the batch is committed, and the next run resumes at the checkpoint.
                raise ImportFailed("the file reader sent a broken frame") from None
            yield staged
            # Committed: the reader may stage one more. It may have ended already (it
            # needs no acknowledgement after its last batch), and then the pipe is closed.
            with suppress(BrokenPipeError):
                proc.stdin.write(b".")
                proc.stdin.flush()
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)
        with suppress(BrokenPipeError):
            proc.stdin.close()


def _checkpoint(
    db: Db, input_id: str, opts: ImportOptions, size: int
) -> tuple[_Run, Counts, int, bool]:
    """(position, counts, reject bytes, finished) to start from; a fresh checkpoint when
    there is none or the import starts over."""
    row = db.read_checkpoint(input_id)
    if row is not None and not opts.from_start:
        return _Run(row[0], row[1], row[9], row[10]), Counts(*row[2:8]), row[8], row[11] is not None
    now = int(time.time())
    db.new_checkpoint((input_id, str(opts.path), size, str(opts.rejects_path), now, now))
    return _Run(0, 0, 0, 0), Counts(), 0, False


def _open_db(opts: ImportOptions) -> Db:
    url = opts.database_url
    if url is not None and url.startswith(("postgresql://", "postgres://")):
        from gateway.persistence.legacy_import_pg import PostgresDb

        return PostgresDb(url)
    return SqliteDb(opts.db_path, opts.cache_mib)


class _Session:
    """One run of the command: commits a step's rejects and checkpoint, reports progress."""

    def __init__(
        self,
        db: Db,
        input_id: str,
        result: ImportResult,
        rejects_file: _RejectFile,
        run: _Run,
        progress: Callable[[], None],
    ) -> None:
        self.db = db
        self.input_id = input_id
        self.result = result
        self.rejects_file = rejects_file
        self.run = run
        self.progress = progress

    def parse_rejects(self, staged: Staged) -> list[RejectLine]:
        for r in staged.rejects:
            self.result.kinds[r.kind] += 1
        self.result.counts.rejected += len(staged.rejects)
        return list(staged.rejects)

    def batch_read(self, staged: Staged) -> None:
        self.result.counts.rows += staged.data_lines
        self.run.offset, self.run.line = staged.end_offset, staged.end_line

    def commit(self, rejects: list[RejectLine]) -> None:
        """The step's rejects made durable, then its checkpoint and rows committed."""
        rejects_bytes = self.rejects_file.write(rejects)
        params = _checkpoint_params(self.result.counts, rejects_bytes, self.run, self.input_id)
        self.db.execute(CHECKPOINT_SQL, params)
        self.db.commit()
        self.progress()


def _import_sqlite(
    db: SqliteDb,
    opts: ImportOptions,
    now: int,
    session: _Session,
    merger: _Merger,
    batches: Iterator[Staged],
    scratch_dir: Path,
) -> None:
    run = session.run
    imp = _SqliteImport(db, session.input_id, opts, now, run, scratch_dir)

    def finish_run() -> None:
        while run.merged:
            try:
                rejects = imp.slice_pending(merger, run)
                session.commit(rejects)
            except BaseException:
                db.rollback()
                raise

    def close_run() -> None:
        try:
            imp.close_run(run)
            session.commit([])
        except BaseException:
            db.rollback()
            raise

    finish_run()  # a run a killed import left half merged
    for staged in batches:
        try:
            rejects = session.parse_rejects(staged)
            rejects += imp.append(staged, merger, run)
            session.batch_read(staged)
            session.commit(rejects)
        except BaseException:
            db.rollback()
            raise
        finally:
            imp.detach()
        remove(staged.path)
        if imp.run_full(session.result.counts):
            finish_run()
            close_run()
    finish_run()
    if imp.open_rows:
        close_run()
        finish_run()
    imp.finish()
    db.commit()


def _import_postgres(
    db: Any, session: _Session, merger: _Merger, batches: Iterator[Staged], now: int
) -> None:
    from gateway.persistence.legacy_import_pg import LOSERS, STAGE

    # Each batch merged straight from its COPY, sorted by each table's key.
    by_id = "s.legacy_id, s.seq"
    by_name = "s.tenant_id, s.username_norm, s.seq"
    ids_insert = ids_merge_sql(STAGE, "seq", by_id)
    ids_rows = ids_rows_sql(STAGE, "seq", by_id)
    insert = merge_sql(STAGE, "seq", by_name, LOSERS, now)
    rows = slice_rows_sql(STAGE, "seq", by_name)
    losers_rows = losers_rows_sql(STAGE, LOSERS)
    for staged in batches:
        try:
            rejects = session.parse_rejects(staged)
            db.load(staged)
            if staged.rows:
                merger.merge_ids(ids_insert, ids_rows, LOSERS, 1, staged.rows)
                rejects += merger.merge_rows(insert, rows, LOSERS, 1, staged.rows)
                rejects += merger.classify_losers(losers_rows, LOSERS)
            session.batch_read(staged)
            session.commit(rejects)
        except BaseException:
            db.rollback()
            raise
        remove(staged.path)


def run_import(
    opts: ImportOptions, on_progress: Callable[[Progress], None] | None = None
) -> ImportResult:
    """Imports `opts.path` into the database (already migrated) that `opts` names."""
    if not opts.path.is_file():
        raise ImportFailed(f"{opts.path}: no such file")
    fmt = opts.fmt or detect_format(opts.path)
    if fmt == "csv":
        with opts.path.open("rb") as fh:
            try:
                CsvFormat.from_header(fh.readline().rstrip(b"\r\n"))
            except ValueError as exc:
                raise ImportFailed(f"{opts.path}: {exc}") from None
    input_id, size = input_identity(opts.path)
    now = int(time.time())
    db = _open_db(opts)
    try:
        run, counts, rejects_bytes, finished = _checkpoint(db, input_id, opts, size)
        result = ImportResult(input_id, counts, resumed_at_line=run.line)
        if finished:
            result.already_done = True
            return result
        offset, line = run.offset, run.line
        stage_dir = Path(tempfile.mkdtemp(prefix="bitcache-import-stage-"))
        batches: Iterator[Staged]
        if opts.parse_in_child:
            job = {
                "path": str(opts.path),
                "fmt": fmt,
                "offset": offset,
                "line": line,
                "policies": opts.policies,
                "now": now,
                "batch_rows": opts.batch_rows,
                "stage_dir": str(stage_dir),
            }
            batches = _staged_from_reader(job)
        else:
            parsed = read_batches(opts.path, fmt, offset, line, opts.policies, now, opts.batch_rows)
            batches = staged_batches(parsed, stage_dir, lambda: None)
        rejects_file = _RejectFile(opts.rejects_path, rejects_bytes, result.warnings)
        input_fd = os.open(opts.path, os.O_RDONLY)
        started = time.monotonic()
        rows_at_start = counts.rows
        settled_at_start = counts.settled

        def progress() -> None:
            result.rows_this_run = counts.rows - rows_at_start
            result.elapsed_s = time.monotonic() - started
            if on_progress is not None:
                on_progress(
                    Progress(
                        run.offset,
                        size,
                        offset,
                        counts,
                        result.rows_this_run,
                        result.elapsed_s,
                        settled_at_start,
                    )
                )

        session = _Session(db, input_id, result, rejects_file, run, progress)
        merger = _Merger(db, input_fd, opts.policies, counts, result.kinds)
        try:
            if isinstance(db, SqliteDb):
                _import_sqlite(db, opts, now, session, merger, batches, stage_dir)
            else:
                _import_postgres(db, session, merger, batches, now)
        finally:
            os.close(input_fd)
            rejects_file.close()
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            shutil.rmtree(stage_dir, ignore_errors=True)
        db.finish(input_id)
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        db.close()
