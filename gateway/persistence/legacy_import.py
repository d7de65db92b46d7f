"""The legacy import engine: export file → `accounts`, resumable, idempotent, fast.

- A reader process (import_reader) reads and checks the file while this one writes, so
  parsing overlaps with SQLite; batches cross a pipe, at most one in flight, so memory is
  flat whatever the file size.
- Each batch (50 000 rows by default) is one transaction: an `executemany` INSERT … ON
  CONFLICT DO NOTHING, the subscriptions of premium rows, and the checkpoint (byte offset,
  line, counts, the reject file's length). A killed import resumes from the last commit
  with `seek()`; the reject file is cut back to the length the checkpoint recorded.
- Conflicts cost nothing when there are none: if the INSERT changed as many rows as it was
  given, every row was new. Otherwise each row of the batch is looked up by legacy_id to
  tell a row we just added, one already imported with the same data (a re-run: fine), one
  whose legacy_id exists with different data (reported, never overwritten), and one whose
  username is taken in its tenant (reported).
- sqlite3 directly, not aiosqlite: one call per batch instead of one await per row. Safe
  beside a running gateway on the same WAL database: BEGIN IMMEDIATE with a busy timeout,
  and a batch holds the write lock for well under a second, within the gateway's 5 s.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from gateway.identity.import_reader import FRAME_HEADER
from gateway.identity.import_rows import CsvFormat
from gateway.identity.import_source import (
    API_KEY_HASH,
    FREE_QUOTA,
    ID,
    LEGACY_ID,
    ROW_COLUMNS,
    TENANT_ID,
    USERNAME_NORM,
    Batch,
    RejectLine,
    Span,
    TenantPolicy,
    detect_format,
    input_identity,
    read_batches,
)

SCHEMA_VERSION: Final = 4  # migrations up to 004_identities.sql


def account_insert_sql(now: int, on_conflict: str = " ON CONFLICT DO NOTHING") -> str:
    """The INSERT of a batch's rows (parameters in ROW_COLUMNS order); `now` is the
    import's time, written in the statement itself rather than bound for every row."""
    values = [
        f"COALESCE(?{i}, {now})" if column == "created_at" else f"?{i}"
        for i, column in enumerate(ROW_COLUMNS, 1)
    ]
    return (
        f"INSERT INTO accounts ({', '.join(ROW_COLUMNS)}, imported_at)"
        f" VALUES ({', '.join(values)}, {int(now)}){on_conflict}"
    )


def plan_insert_sql(now: int, on_conflict: str = " ON CONFLICT DO NOTHING") -> str:
    """The INSERT of the subscriptions that premium time becomes (see plan_row)."""
    return (
        "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
        f" payment_hash) VALUES (?, ?, ?, {int(now)}, ?, ?){on_conflict}"
    )


def plan_row(row: tuple[Any, ...], plan_id: str, quota: int, ends_at: int) -> tuple[Any, ...]:
    """plan_insert_sql's parameters for an account row with premium time left."""
    # The placeholder payment hash is the account's own placeholder key (8 bytes: no real
    # payment hash, always 32, can equal it); unique, so a re-run adds no second plan.
    return (row[ID], plan_id, quota, ends_at, row[API_KEY_HASH])


_STORED: Final = (
    "SELECT id, tenant_id, created_at, username, email, legacy_scheme, legacy_hash,"
    " legacy_premium_until, legacy_quota_bytes FROM accounts WHERE legacy_id = ?"
)
# (field, its index in a row, its index in _STORED), for "same data?" (_differences).
_COMPARED: Final = tuple(
    (name, ROW_COLUMNS.index(column), stored)
    for name, column, stored in (
        ("tenant", "tenant_id", 1),
        ("created_at", "created_at", 2),
        ("username", "username", 3),
        ("email", "email", 4),
        ("password", "legacy_scheme", 5),
        ("password", "legacy_hash", 6),
        ("premium_until", "legacy_premium_until", 7),
        ("quota_bytes", "legacy_quota_bytes", 8),
    )
)


class ImportFailed(Exception):
    """The import cannot go on (unreadable file, database not migrated, reader died)."""


@dataclass(frozen=True)
class ImportOptions:
    path: Path
    db_path: Path
    policies: dict[str, TenantPolicy]
    rejects_path: Path
    fmt: str | None = None  # "jsonl" or "csv"; None: detect
    batch_rows: int = 50_000
    cache_mib: int = 256
    from_start: bool = False  # ignore the checkpoint, read the whole file again
    parse_in_child: bool = True


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


def _connect(db_path: Path, cache_mib: int) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        conn.close()
        raise ImportFailed(f"{db_path}: database at version {version}, needs {SCHEMA_VERSION}")
    conn.execute("PRAGMA journal_mode=WAL")  # the gateway's mode; a no-op when already set
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
    return conn


def _sanitize(reason: str) -> str:
    return reason.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _differences(row: tuple[Any, ...], stored: tuple[Any, ...]) -> list[str]:
    """Names of the fields where an incoming row differs from the stored account."""
    upgraded = stored[5] is None  # the first login replaced the legacy password
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


def _batches_from_reader(job: dict[str, Any]) -> Iterator[Batch]:
    """Batches parsed by a reader process (import_reader), one at most in flight."""
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
        proc.stdin.write(orjson.dumps(job))  # TenantPolicy dataclasses become objects
        proc.stdin.close()
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
            batch = Batch.decode(frame)
            del frame  # hold one batch at a time, not its bytes as well
            yield batch
            del batch
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


class _Importer:
    def __init__(self, opts: ImportOptions, conn: sqlite3.Connection, input_id: str) -> None:
        self.opts = opts
        self.conn = conn
        self.input_id = input_id
        self.now = int(time.time())
        self.insert_account = account_insert_sql(self.now)
        self.insert_plan = plan_insert_sql(self.now)

    def _classify(
        self, batch: Batch, input_fd: int, kinds: Counter[str]
    ) -> tuple[list[bool], int, list[RejectLine]]:
        """Which rows of a batch that met conflicts were inserted just now."""
        inserted = []
        present = 0
        rejects = []
        for row, span in zip(batch.rows, batch.spans, strict=True):
            stored = self.conn.execute(_STORED, (row[LEGACY_ID],)).fetchone()
            if stored is not None and stored[0] == row[ID]:
                inserted.append(True)
                continue
            inserted.append(False)
            if stored is not None:
                differing = _differences(row, stored)
                if not differing:
                    present += 1
                    continue
                kind = "conflict"
                reason = f"legacy_id exists with different data: {', '.join(differing)}"
            else:
                holder = self.conn.execute(
                    "SELECT legacy_id FROM accounts WHERE tenant_id = ? AND username_norm = ?",
                    (row[TENANT_ID], row[USERNAME_NORM]),
                ).fetchone()
                if holder is not None:
                    kind = "duplicate-username"
                    owner = f"legacy_id {holder[0]}" if holder[0] else "an existing account"
                    reason = f"username taken in tenant {row[TENANT_ID]} by {owner}"
                else:  # an account id clash: astronomically rare, and harmless to retry
                    kind = "retry"
                    reason = "not stored (account id clash); import the reject file again"
            kinds[kind] += 1
            rejects.append(RejectLine(span[0], kind, reason, _raw(input_fd, span)))
        return inserted, present, rejects

    def apply(
        self,
        batch: Batch,
        counts: Counts,
        rejects_file: _RejectFile,
        input_fd: int,
        kinds: Counter[str],
    ) -> None:
        """One batch, its subscriptions, rejects and checkpoint: all or nothing."""
        conn = self.conn
        for r in batch.rejects:
            kinds[r.kind] += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(self.insert_account, batch.rows)
            changed = conn.total_changes - before
            rejects = list(batch.rejects)
            present = 0
            if changed == len(batch.rows):
                inserted_rows = batch.rows
                plans = [plan_row(batch.rows[i], p, q, e) for i, p, q, e in batch.premium]
            else:
                mask, present, db_rejects = self._classify(batch, input_fd, kinds)
                rejects += db_rejects
                inserted_rows = [row for row, new in zip(batch.rows, mask, strict=True) if new]
                plans = [
                    plan_row(batch.rows[i], p, q, e) for i, p, q, e in batch.premium if mask[i]
                ]
            if plans:
                conn.executemany(self.insert_plan, plans)
            rejects_bytes = rejects_file.write(rejects)
            counts.rows += batch.data_lines
            counts.inserted += len(inserted_rows)
            counts.present += present
            counts.rejected += len(rejects)
            counts.plans += len(plans)
            counts.own_quotas += sum(1 for row in inserted_rows if row[FREE_QUOTA] is not None)
            conn.execute(
                "UPDATE import_checkpoints SET byte_offset = ?, line = ?, rows_read = ?,"
                " inserted = ?, present = ?, rejected = ?, plans = ?, own_quotas = ?,"
                " rejects_bytes = ?, updated_at = ? WHERE input_id = ?",
                (
                    batch.end_offset,
                    batch.end_line,
                    counts.rows,
                    counts.inserted,
                    counts.present,
                    counts.rejected,
                    counts.plans,
                    counts.own_quotas,
                    rejects_bytes,
                    int(time.time()),
                    self.input_id,
                ),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _raw(fd: int, span: Span) -> bytes:
    _, offset, length = span
    return os.pread(fd, length, offset)


def _checkpoint(
    conn: sqlite3.Connection, input_id: str, opts: ImportOptions, size: int
) -> tuple[int, int, Counts, int, bool]:
    """(byte offset, line, counts, reject bytes, finished) to start from; a fresh
    checkpoint when there is none or the import starts over."""
    row = conn.execute(
        "SELECT byte_offset, line, rows_read, inserted, present, rejected, plans, own_quotas,"
        " rejects_bytes, finished_at FROM import_checkpoints WHERE input_id = ?",
        (input_id,),
    ).fetchone()
    if row is not None and not opts.from_start:
        return row[0], row[1], Counts(*row[2:8]), row[8], row[9] is not None
    now = int(time.time())
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT OR REPLACE INTO import_checkpoints (input_id, path, size, byte_offset, line,"
        " rejects_path, started_at, updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)",
        (input_id, str(opts.path), size, str(opts.rejects_path), now, now),
    )
    conn.execute("COMMIT")
    return 0, 0, Counts(), 0, False


def run_import(
    opts: ImportOptions, on_progress: Callable[[Progress], None] | None = None
) -> ImportResult:
    """Imports `opts.path` into the database at `opts.db_path` (already migrated)."""
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
    conn = _connect(opts.db_path, opts.cache_mib)
    try:
        offset, line, counts, rejects_bytes, finished = _checkpoint(conn, input_id, opts, size)
        result = ImportResult(input_id, counts, resumed_at_line=line)
        if finished:
            result.already_done = True
            return result
        importer = _Importer(opts, conn, input_id)
        batches: Iterator[Batch]
        if opts.parse_in_child:
            job = {
                "path": str(opts.path),
                "fmt": fmt,
                "offset": offset,
                "line": line,
                "policies": opts.policies,
                "now": importer.now,
                "batch_rows": opts.batch_rows,
            }
            batches = _batches_from_reader(job)
        else:
            batches = read_batches(
                opts.path, fmt, offset, line, opts.policies, importer.now, opts.batch_rows
            )
        rejects_file = _RejectFile(opts.rejects_path, rejects_bytes, result.warnings)
        input_fd = os.open(opts.path, os.O_RDONLY)
        started = time.monotonic()
        rows_at_start = counts.rows
        try:
            for batch in batches:
                importer.apply(batch, counts, rejects_file, input_fd, result.kinds)
                result.rows_this_run = counts.rows - rows_at_start
                result.elapsed_s = time.monotonic() - started
                if on_progress is not None:
                    on_progress(
                        Progress(
                            batch.end_offset,
                            size,
                            offset,
                            counts,
                            result.rows_this_run,
                            result.elapsed_s,
                        )
                    )
                del batch  # before the next one is decoded: one batch in memory at a time
        finally:
            os.close(input_fd)
            rejects_file.close()
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        conn.execute(
            "UPDATE import_checkpoints SET finished_at = ? WHERE input_id = ?",
            (int(time.time()), input_id),
        )
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        conn.close()
