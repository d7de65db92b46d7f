"""The legacy import engine: export file → `accounts`, resumable, idempotent, fast.

- A reader process (identity/import_reader) reads and checks the file on the second core
  and writes each batch to a staging file (import_stage); this process moves the batch
  into the database with one `INSERT … SELECT … ON CONFLICT DO NOTHING` (SQLite: the file
  attached; PostgreSQL: COPY into a temporary table, legacy_import_pg), so no Python runs
  per row on the writing side. At most two staging files exist: memory and scratch space
  stay flat whatever the file size.
- Each batch (50 000 rows by default) is one transaction: the rows, the subscriptions of
  premium rows, and the checkpoint (byte offset, line, counts, the reject file's length).
  A killed import resumes from the last commit with `seek()`; the reject file is cut back
  to the length the checkpoint recorded.
- Conflicts cost nothing when there are none: if the INSERT added as many rows as were
  staged, every row was new. Otherwise one join of the staging table with `accounts` by
  legacy_id finds the rows not added just now, to tell one already imported with the same
  data (a re-run: fine), one whose legacy_id exists with different data (reported, never
  overwritten), and one whose username is taken in its tenant (reported).
- SQLite through sqlite3 directly, not aiosqlite: a few calls per batch. Safe beside a
  running gateway on the same WAL database: BEGIN IMMEDIATE with a busy timeout, and a
  batch holds the write lock for well under a second, within the gateway's 5 s.
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
    API_KEY_HASH,
    ID,
    ROW_COLUMNS,
    RejectLine,
    TenantPolicy,
    detect_format,
    input_identity,
    read_batches,
)
from gateway.persistence.import_stage import Staged, remove, staged_batches

SCHEMA_VERSION: Final = 4  # migrations up to 004_identities.sql
# Checkpoint the WAL by hand once it passes this size, instead of SQLite's automatic
# checkpoint at every commit past 4 MB: a page that several batches write (the tails of
# the id and legacy_id indexes, the table's last pages) is then copied back once.
WAL_CHECKPOINT_BYTES: Final = 256 << 20


def account_insert_sql(now: int, on_conflict: str = " ON CONFLICT DO NOTHING") -> str:
    """The INSERT of one account row (parameters in ROW_COLUMNS order), as a plain
    batched INSERT runs it (bench/import.py's baseline); `now` is the import's time."""
    values = [
        f"COALESCE(?{i}, {now})" if column == "created_at" else f"?{i}"
        for i, column in enumerate(ROW_COLUMNS, 1)
    ]
    return (
        f"INSERT INTO accounts ({', '.join(ROW_COLUMNS)}, imported_at)"
        f" VALUES ({', '.join(values)}, {int(now)}){on_conflict}"
    )


def plan_insert_sql(now: int, on_conflict: str = " ON CONFLICT DO NOTHING") -> str:
    """The INSERT of one subscription that premium time becomes (see plan_row)."""
    return (
        "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
        f" payment_hash) VALUES (?, ?, ?, {int(now)}, ?, ?){on_conflict}"
    )


def plan_row(row: tuple[Any, ...], plan_id: str, quota: int, ends_at: int) -> tuple[Any, ...]:
    """plan_insert_sql's parameters for an account row with premium time left."""
    # The placeholder payment hash is the account's own placeholder key (8 bytes: no real
    # payment hash, always 32, can equal it); unique, so a re-run adds no second plan.
    return (row[ID], plan_id, quota, ends_at, row[API_KEY_HASH])


def stage_insert_sql(stage: str, order: str, now: int) -> str:
    """The INSERT of a whole staged batch into `accounts`, in file order: a row whose
    legacy_id, or username in its tenant, is taken is left out."""
    values = [
        f"COALESCE(s.{column}, {int(now)})" if column == "created_at" else f"s.{column}"
        for column in ROW_COLUMNS
    ]
    # WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
    return (
        f"INSERT INTO accounts ({', '.join(ROW_COLUMNS)}, imported_at)"
        f" SELECT {', '.join(values)}, {int(now)} FROM {stage} AS s"
        f" WHERE true ORDER BY s.{order} ON CONFLICT DO NOTHING"
    )


def stage_plans_sql(rows_from: str, plan: str, now: int, all_inserted: bool) -> str:
    """The subscriptions of a staged batch's premium rows; only of the rows added just now
    (their staged id is in `accounts`) unless all were. `rows_from` names the staged rows
    `s`, and `plan` the relation holding their plan_id, plan_quota and plan_ends."""
    added = "" if all_inserted else " JOIN accounts AS a ON a.id = s.id"
    return (
        "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
        f" payment_hash) SELECT s.id, {plan}.plan_id, {plan}.plan_quota, {int(now)},"
        f" {plan}.plan_ends, s.api_key_hash FROM {rows_from}{added}"
        f" WHERE {plan}.plan_id IS NOT NULL ON CONFLICT DO NOTHING"
    )


def stage_own_quotas_sql(stage: str) -> str:
    """How many of the rows added just now keep their own free quota."""
    return (
        f"SELECT count(*) FROM {stage} AS s JOIN accounts AS a ON a.id = s.id"
        " WHERE s.free_quota_bytes IS NOT NULL"
    )


_STORED_COLUMNS: Final = (
    "id",
    "tenant_id",
    "created_at",
    "username",
    "email",
    "legacy_scheme",
    "legacy_hash",
    "legacy_premium_until",
    "legacy_quota_bytes",
)


def stage_left_out_sql(stage: str, order: str) -> str:
    """The staged rows the INSERT left out, with the stored account of their legacy_id if
    any: ROW_COLUMNS, the row's place in the batch (`order`, from 1), then
    _STORED_COLUMNS (NULLs when the legacy_id is not stored)."""
    return (
        f"SELECT {', '.join('s.' + c for c in ROW_COLUMNS)}, s.{order},"
        f" {', '.join('a.' + c for c in _STORED_COLUMNS)}"
        f" FROM {stage} AS s LEFT JOIN accounts AS a ON a.legacy_id = s.legacy_id"
        f" WHERE a.id IS NULL OR a.id <> s.id ORDER BY s.{order}"
    )


USERNAME_HOLDER_SQL: Final = (
    "SELECT legacy_id FROM accounts WHERE tenant_id = ? AND username_norm = ?"
)
CHECKPOINT_SQL: Final = (
    "UPDATE import_checkpoints SET byte_offset = ?, line = ?, rows_read = ?,"
    " inserted = ?, present = ?, rejected = ?, plans = ?, own_quotas = ?,"
    " rejects_bytes = ?, updated_at = ? WHERE input_id = ?"
)
READ_CHECKPOINT_SQL: Final = (
    "SELECT byte_offset, line, rows_read, inserted, present, rejected, plans, own_quotas,"
    " rejects_bytes, finished_at FROM import_checkpoints WHERE input_id = ?"
)
DELETE_CHECKPOINT_SQL: Final = "DELETE FROM import_checkpoints WHERE input_id = ?"
NEW_CHECKPOINT_SQL: Final = (
    "INSERT INTO import_checkpoints (input_id, path, size, byte_offset, line,"
    " rejects_path, started_at, updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)"
)
FINISH_SQL: Final = "UPDATE import_checkpoints SET finished_at = ? WHERE input_id = ?"

# (field, its index in a row, its index in _STORED_COLUMNS), for "same data?".
_COMPARED: Final = tuple(
    (name, ROW_COLUMNS.index(column), _STORED_COLUMNS.index(column))
    for name, column in (
        ("tenant", "tenant_id"),
        ("created_at", "created_at"),
        ("username", "username"),
        ("email", "email"),
        ("password", "legacy_scheme"),
        ("password", "legacy_hash"),
        ("premium_until", "legacy_premium_until"),
        ("quota_bytes", "legacy_quota_bytes"),
    )
)
_SCHEME: Final = _STORED_COLUMNS.index("legacy_scheme")


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
    database_url: str | None = None  # postgresql://…: import into PostgreSQL


@dataclass
class Counts:
    rows: int = 0  # data lines read (a CSV header and blank lines are not rows)
    inserted: int = 0
    present: int = 0  # already imported with the same data
    rejected: int = 0
    plans: int = 0
    own_quotas: int = 0


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    bytes_at_start: int  # where this run started (a resumed run starts past 0)
    counts: Counts
    rows_this_run: int
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this run's byte rate so far."""
        done = self.bytes_done - self.bytes_at_start
        if done <= 0 or self.elapsed_s <= 0:
            return None
        return (self.bytes_total - self.bytes_done) * self.elapsed_s / done


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


class Target(Protocol):
    """A database the importer writes to; each batch is one transaction from `load` to
    `commit` (or `rollback`)."""

    def read_checkpoint(self, input_id: str) -> tuple[Any, ...] | None: ...
    def new_checkpoint(self, params: tuple[Any, ...]) -> None: ...
    def load(self, staged: Staged) -> int:
        """Begins the batch's transaction and inserts its rows; how many were added."""
        ...

    def left_out(self) -> list[tuple[Any, ...]]: ...
    def username_holder(self, tenant: str, username_norm: str) -> tuple[Any, ...] | None: ...
    def add_plans(self, all_inserted: bool) -> int: ...
    def own_quotas_added(self) -> int: ...
    def save_checkpoint(self, params: tuple[Any, ...]) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def finish(self, input_id: str) -> None: ...
    def close(self) -> None: ...


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


class SqliteTarget:
    """The gateway's SQLite database, the staged batch attached as `stage`."""

    def __init__(self, db_path: Path, cache_mib: int, now: int) -> None:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.close()
            raise ImportFailed(f"{db_path}: database at version {version}, needs {SCHEMA_VERSION}")
        tune_sqlite(conn, cache_mib)
        self.conn = conn
        self.db_path = db_path
        self.insert = stage_insert_sql("stage.r", "rowid", now)
        plans_from = "stage.p AS p JOIN stage.r AS s ON s.rowid = p.idx"
        self.plans = {all_: stage_plans_sql(plans_from, "p", now, all_) for all_ in (True, False)}
        self.own_quotas = stage_own_quotas_sql("stage.r")
        self.left_out_sql = stage_left_out_sql("stage.r", "rowid")
        self.attached = False

    def read_checkpoint(self, input_id: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(READ_CHECKPOINT_SQL, (input_id,)).fetchone()
        return row

    def new_checkpoint(self, params: tuple[Any, ...]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(DELETE_CHECKPOINT_SQL, (params[0],))
        self.conn.execute(NEW_CHECKPOINT_SQL, params)
        self.conn.execute("COMMIT")

    def load(self, staged: Staged) -> int:
        self.conn.execute("ATTACH DATABASE ? AS stage", (staged.path,))
        self.attached = True
        self.conn.execute("BEGIN IMMEDIATE")
        before = self.conn.total_changes
        self.conn.execute(self.insert)
        return self.conn.total_changes - before

    def left_out(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.left_out_sql).fetchall()

    def username_holder(self, tenant: str, username_norm: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            USERNAME_HOLDER_SQL, (tenant, username_norm)
        ).fetchone()
        return row

    def add_plans(self, all_inserted: bool) -> int:
        before = self.conn.total_changes
        self.conn.execute(self.plans[all_inserted])
        return self.conn.total_changes - before

    def own_quotas_added(self) -> int:
        return int(self.conn.execute(self.own_quotas).fetchone()[0])

    def save_checkpoint(self, params: tuple[Any, ...]) -> None:
        self.conn.execute(CHECKPOINT_SQL, params)

    def _detach(self) -> None:
        if self.attached:
            self.conn.execute("DETACH DATABASE stage")
            self.attached = False

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self._detach()
        checkpoint_wal(self.conn, self.db_path)

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._detach()

    def finish(self, input_id: str) -> None:
        self.conn.execute(FINISH_SQL, (int(time.time()), input_id))
        checkpoint_wal(self.conn, self.db_path, force=True)

    def close(self) -> None:
        self.conn.close()


def _sanitize(reason: str) -> str:
    return reason.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _differences(row: tuple[Any, ...], stored: tuple[Any, ...]) -> list[str]:
    """Names of the fields where an incoming row differs from the stored account."""
    upgraded = stored[_SCHEME] is None  # the first login replaced the legacy password
    names = []
    for name, r, s in _COMPARED:
        if name == "password" and upgraded:
            continue
        if name == "created_at" and row[r] is None:  # absent: stored as the import time
            continue
        if row[r] != stored[s] and name not in names:
            names.append(name)
    return names


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


class _Importer:
    def __init__(self, target: Target, input_id: str) -> None:
        self.target = target
        self.input_id = input_id

    def _classify(
        self, staged: Staged, input_fd: int, kinds: Counter[str]
    ) -> tuple[int, list[RejectLine]]:
        """(rows already present, rejects) among the rows the INSERT left out."""
        present = 0
        rejects = []
        n = len(ROW_COLUMNS)
        for found in self.target.left_out():
            row, span, stored = found[:n], staged.span(found[n]), found[n + 1 :]
            if stored[0] is not None:
                differing = _differences(row, stored)
                if not differing:
                    present += 1
                    continue
                kind = "conflict"
                reason = f"legacy_id exists with different data: {', '.join(differing)}"
            else:
                tenant, norm = row[ROW_COLUMNS.index("tenant_id")], row[_USERNAME_NORM]
                holder = self.target.username_holder(tenant, norm)
                if holder is not None:
                    kind = "duplicate-username"
                    owner = f"legacy_id {holder[0]}" if holder[0] else "an existing account"
                    reason = f"username taken in tenant {tenant} by {owner}"
                else:  # an account id clash: astronomically rare, and harmless to retry
                    kind = "retry"
                    reason = "not stored (account id clash); import the reject file again"
            kinds[kind] += 1
            rejects.append(RejectLine(span[0], kind, reason, _raw(input_fd, span)))
        return present, rejects

    def apply(
        self,
        staged: Staged,
        counts: Counts,
        rejects_file: _RejectFile,
        input_fd: int,
        kinds: Counter[str],
    ) -> None:
        """One batch, its subscriptions, rejects and checkpoint: all or nothing."""
        target = self.target
        for r in staged.rejects:
            kinds[r.kind] += 1
        try:
            added = target.load(staged)
            rejects = list(staged.rejects)
            present = 0
            if added == staged.rows:
                plans = target.add_plans(True) if staged.plans else 0
                own = staged.own_quotas
            else:
                present, db_rejects = self._classify(staged, input_fd, kinds)
                rejects += db_rejects
                plans = target.add_plans(False) if staged.plans else 0
                own = target.own_quotas_added() if staged.own_quotas else 0
            rejects_bytes = rejects_file.write(rejects)
            counts.rows += staged.data_lines
            counts.inserted += added
            counts.present += present
            counts.rejected += len(rejects)
            counts.plans += plans
            counts.own_quotas += own
            target.save_checkpoint(
                (
                    staged.end_offset,
                    staged.end_line,
                    counts.rows,
                    counts.inserted,
                    counts.present,
                    counts.rejected,
                    counts.plans,
                    counts.own_quotas,
                    rejects_bytes,
                    int(time.time()),
                    self.input_id,
                )
            )
        except BaseException:
            target.rollback()
            raise
        target.commit()
        remove(staged.path)


_USERNAME_NORM: Final = ROW_COLUMNS.index("username_norm")


def _raw(fd: int, span: tuple[Any, ...]) -> bytes:
    _, offset, length = span
    return os.pread(fd, length, offset)


def _checkpoint(
    target: Target, input_id: str, opts: ImportOptions, size: int
) -> tuple[int, int, Counts, int, bool]:
    """(byte offset, line, counts, reject bytes, finished) to start from; a fresh
    checkpoint when there is none or the import starts over."""
    row = target.read_checkpoint(input_id)
    if row is not None and not opts.from_start:
        return row[0], row[1], Counts(*row[2:8]), row[8], row[9] is not None
    now = int(time.time())
    target.new_checkpoint((input_id, str(opts.path), size, str(opts.rejects_path), now, now))
    return 0, 0, Counts(), 0, False


def _open_target(opts: ImportOptions, now: int) -> Target:
    url = opts.database_url
    if url is not None and url.startswith(("postgresql://", "postgres://")):
        from gateway.persistence.legacy_import_pg import PostgresTarget

        return PostgresTarget(url, now)
    return SqliteTarget(opts.db_path, opts.cache_mib, now)


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
    target = _open_target(opts, now)
    try:
        offset, line, counts, rejects_bytes, finished = _checkpoint(target, input_id, opts, size)
        result = ImportResult(input_id, counts, resumed_at_line=line)
        if finished:
            result.already_done = True
            return result
        importer = _Importer(target, input_id)
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
        try:
            for staged in batches:
                importer.apply(staged, counts, rejects_file, input_fd, result.kinds)
                result.rows_this_run = counts.rows - rows_at_start
                result.elapsed_s = time.monotonic() - started
                if on_progress is not None:
                    on_progress(
                        Progress(
                            staged.end_offset,
                            size,
                            offset,
                            counts,
                            result.rows_this_run,
                            result.elapsed_s,
                        )
                    )
        finally:
            os.close(input_fd)
            rejects_file.close()
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            shutil.rmtree(stage_dir, ignore_errors=True)
        target.finish(input_id)
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        target.close()
