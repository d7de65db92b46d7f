"""Legacy import speed: `bitcache-admin import` vs a plain batched INSERT of the same rows.

    python -m bench.import [--rows 1000000] [--batch-rows 50000] [--repeat 1] [--keep]

Generates N synthetic accounts of the old service (JSON Lines; a realistic mix of
password schemes, emails, premium time and quotas, usernames in random order) into a
temporary directory, then
- import: runs the real command (`python -m gateway.admin --config … import FILE`) on a
  fresh migrated database, its rows/s as the command itself reports them (reading,
  checking, conflict handling, checkpoints and rejects included; start-up excluded), and
  the peak RSS of the command and its reader process together, sampled from /proc;
- plain: the same rows, already parsed, inserted in the file's order into the same schema
  (legacy_accounts and legacy_ids, migration 014) on another fresh database by
  `executemany` with the same batch size, one transaction per batch and the importer's
  connection settings (tune_sqlite, checkpoint_wal), with no ON CONFLICT, checkpoint,
  reject file, staging or sorting — only the time of the inserts is counted (parsing is
  not): what a plain batched INSERT of these rows costs here.
Writes `import_rows_per_s` (value, baseline, ratio, unit) into bench/results.json,
keeping the other figures there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.config import TenantSettings
from gateway.identity.import_source import (
    LEGACY_ID,
    ROW_COLUMNS,
    TENANT_ID,
    USERNAME_NORM,
    read_batches,
    tenant_policies,
)
from gateway.persistence.legacy_import import checkpoint_wal, plain_insert_sql, tune_sqlite
from gateway.persistence.sqlite import SqliteDatabase

RESULTS = Path(__file__).with_name("results.json")
GB = 1_000_000_000
_B64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _chars(seed: int, n: int, alphabet: str) -> str:
    out = []
    x = seed * 6364136223846793005 + 1442695040888963407
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(alphabet[(x >> 33) % len(alphabet)])
    return "".join(out)


def _password_pool(size: int = 1024) -> list[dict[str, Any]]:
    """Well-formed records of every scheme (values are not real hashes: not needed here)."""
    pool: list[dict[str, Any]] = []
    for i in range(size):
        kind = i % 20
        if kind < 16:
            pool.append({"scheme": "bcrypt", "hash": "$2b$10$" + _chars(i, 53, _B64)})
        elif kind == 16:
            phc = "$argon2id$v=19$m=65536,t=3,p=4$" + _chars(i, 22, _B64[2:])
            pool.append({"scheme": "argon2id", "hash": phc + "$" + _chars(i + 1, 43, _B64[2:])})
        elif kind == 17:
            pool.append(
                {
                    "scheme": "pbkdf2-sha256",
                    "iterations": 29_000,
                    "salt": _chars(i, 22, _B64[2:]),
                    "hash": _chars(i + 7, 43, _B64[2:]),
                }
            )
        elif kind == 18:
            pool.append({"scheme": "md5", "hash": _chars(i, 32, "0123456789abcdef")})
        else:
            pool.append(
                {
                    "scheme": "sha1",
                    "hash": _chars(i, 40, "0123456789abcdef"),
                    "salt": _chars(i, 8, _B64[2:]),
                    "salt_position": "suffix",
                }
            )
    return pool


def generate(path: Path, rows: int) -> None:
    pool = _password_pool()
    now = int(time.time())
    with path.open("wb", buffering=1 << 20) as fh:
        for i in range(rows):
            scatter = (i * 2654435761) % (1 << 32)  # usernames in random index order
            row: dict[str, Any] = {
                "legacy_id": f"u{i}",
                "username": f"User{scatter:08x}.{i}",
                "password": pool[i % len(pool)],
                "created_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_200_000_000 + scatter % 400_000_000)
                ),
            }
            if i % 10:
                row["email"] = f"user{i}@example.org"
            if i % 10 == 3:
                row["premium_until"] = now + (1 if i % 20 == 3 else -1) * (scatter % 10**7)
            if i % 5 == 1:
                row["quota_bytes"] = 50 * GB if i % 10 == 1 else 500 * GB
            fh.write(orjson.dumps(row) + b"\n")


async def _migrate(db_path: Path) -> None:
    db = SqliteDatabase(db_path)
    await db.open()
    await db.close()


class _RssSampler(threading.Thread):
    """Peak of the summed RSS of a process and its children, sampled every 50 ms, and the
    CPU seconds each of them used (from /proc, last seen before it ended)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.cpu_s: dict[int, float] = {}
        self.stop = threading.Event()

    @staticmethod
    def _cpu_s(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    @staticmethod
    def _rss_kib(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            todo += [int(c) for c in children]
        return pids

    def run(self) -> None:
        while not self.stop.wait(0.05):
            tree = self._tree()
            self.peak_kib = max(self.peak_kib, sum(self._rss_kib(p) for p in tree))
            for pid in tree:
                cpu = self._cpu_s(pid)
                if cpu is not None:
                    self.cpu_s[pid] = cpu


def _db_bytes(db_path: Path) -> int:
    return sum(p.stat().st_size for p in (db_path, Path(f"{db_path}-wal")) if p.exists())


def run_import(work: Path, data: Path, batch_rows: int) -> tuple[float, int, _RssSampler, str]:
    """(rows/s, rows, sampler with peak RSS and CPU time, summary) of the real command."""
    config = work / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(work / "import-db"),
                "kubo_api_url": "http://127.0.0.1:5001",
                "lnd": {"rest_url": "https://127.0.0.1:8080", "tls_cert": "-", "macaroon": "-"},
            }
        )
    )
    cmd = [
        sys.executable, "-m", "gateway.admin", "--config", str(config),
        "import", str(data), "--batch-rows", str(batch_rows),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = _RssSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}):\n{out}\n{err}")
    match = re.search(r"([\d,]+) rows in ([\d.]+) s", out)
    if match is None:
        raise SystemExit(f"no rate in the import's summary:\n{out}")
    rows, seconds = int(match.group(1).replace(",", "")), float(match.group(2))
    return rows / seconds, rows, sampler, out


def run_plain(db_path: Path, data: Path, batch_rows: int) -> tuple[float, int, float]:
    """(rows/s, rows, CPU seconds) of plain executemany inserts of the parsed rows."""
    asyncio.run(_migrate(db_path))
    conn = sqlite3.connect(db_path, isolation_level=None)
    tune_sqlite(conn, cache_mib=256)  # the importer's pragmas and page cache
    now = int(time.time())
    insert = plain_insert_sql(now)
    insert_id = "INSERT INTO legacy_ids (legacy_id, tenant_id, username_norm) VALUES (?, ?, ?)"
    policies = tenant_policies([TenantSettings()])
    width = len(ROW_COLUMNS)
    spent = cpu = 0.0
    rows = 0
    for batch in read_batches(data, "jsonl", 0, 0, policies, now, batch_rows):
        # Prepared outside the clock: the columns stored (not the span), the id's row.
        params = [row[:width] for row in batch.rows]
        ids = [(r[LEGACY_ID], r[TENANT_ID], r[USERNAME_NORM]) for r in batch.rows]
        started, started_cpu = time.perf_counter(), time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, params)
        conn.executemany(insert_id, ids)
        conn.execute("COMMIT")
        checkpoint_wal(conn, db_path)  # as the importer does after each batch
        spent += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        rows += len(batch.rows)
    started, started_cpu = time.perf_counter(), time.process_time()
    checkpoint_wal(conn, db_path, force=True)  # as the importer does at the end
    spent += time.perf_counter() - started
    cpu += time.process_time() - started_cpu
    conn.close()
    return rows / spent, rows, cpu


def _cpu_pressure() -> str:
    """How much other work competed for the CPU (share of time some task waited)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "unknown"
    return next((f[6:] + "%" for f in line.split() if f.startswith("avg60=")), "unknown")


def _merge_results(figures: dict[str, dict[str, Any]]) -> None:
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(current | figures, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=1, help="import/plain pairs to run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bitcache-import-", dir=args.dir))
    try:
        data = work / "legacy.jsonl"
        started = time.perf_counter()
        generate(data, args.rows)
        print(
            f"generated {args.rows:,} rows, {data.stat().st_size / 1e6:,.0f} MB,"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        # Import and plain INSERT alternate, each on a fresh database, so that a burst of
        # other load on the machine hits both; the best run of each is reported.
        rates, plain_rates = [], []
        for n in range(1, args.repeat + 1):
            shutil.rmtree(work / "import-db", ignore_errors=True)
            for p in work.glob("plain.sqlite3*"):
                p.unlink()
            rate, imported, sampler, summary = run_import(work, data, args.batch_rows)
            db_bytes = _db_bytes(work / "import-db" / "gateway.sqlite3")
            print(summary.rstrip(), flush=True)
            plain_rate, plain_rows, plain_cpu = run_plain(
                work / "plain.sqlite3", data, args.batch_rows
            )
            assert plain_rows == imported == args.rows, (plain_rows, imported, args.rows)
            rates.append(rate)
            plain_rates.append(plain_rate)
            print(f"run {n}: import {rate:,.0f} rows/s   plain INSERT {plain_rate:,.0f} rows/s"
                  f"   ratio {rate / plain_rate:.2f}")  # fmt: skip
            print(
                "CPU µs/row: import "
                + " + ".join(f"{cpu / imported * 1e6:.1f}" for cpu in sampler.cpu_s.values())
                + f" (command + reader), plain INSERT {plain_cpu / plain_rows * 1e6:.1f};"
                f" CPU pressure avg60 {_cpu_pressure()}",
                flush=True,
            )
            print(
                f"peak RSS (command + reader): {sampler.peak_kib / 1024:,.0f} MiB;"
                f" database {db_bytes / 1e6:,.0f} MB ({db_bytes / imported:,.0f} B/row)",
                flush=True,
            )
        rate, plain_rate = max(rates), max(plain_rates)
        ratio = rate / plain_rate
        print(f"best of {args.repeat}: import {rate:,.0f} rows/s   plain INSERT"
              f" {plain_rate:,.0f} rows/s   ratio {ratio:.2f};"
              f" 100 M rows ≈ {100e6 / rate / 60:,.0f} min,"
              f" {db_bytes / imported * 100e6 / 1e9:,.1f} GB")  # fmt: skip
        _merge_results(
            {
                "import_rows_per_s": {
                    "value": round(rate),
                    "baseline": round(plain_rate),
                    "ratio": round(ratio, 3),
                    "unit": "rows/s",
                }
            }
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
