"""`bitcache-admin --config gateway.json import FILE`: restore accounts of the old service.

Against the gateway's own database, SQLite or PostgreSQL (it may be running: the import
shares its database), after applying any migration the gateway has not yet. Shows rows/s
and the time left while it runs (a bar on a terminal, a line every few seconds otherwise)
and a summary at the end.
Running it again on the same file continues a killed run, or does nothing when done.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from gateway.config import ConfigError, TenantSettings, load_config
from gateway.identity.import_source import FORMATS, tenant_policies
from gateway.persistence.database import Database, DatabaseUnavailable
from gateway.persistence.legacy_import import (
    DEFAULT_RUN_ROWS,
    ImportFailed,
    ImportOptions,
    ImportResult,
    Progress,
    run_import,
)
from gateway.persistence.sqlite import SqliteDatabase
from gateway.tenants.registry import TenantFileError, read_tenants_file

PLAIN_PROGRESS_EVERY_S = 5.0


def register(parser: argparse.ArgumentParser, areas: Any) -> None:
    """Adds `--config` and the `import` command to bitcache-admin's parser."""
    parser.add_argument("--config", type=Path, help="the gateway's JSON config (for import)")
    cmd = areas.add_parser(
        "import",
        help="restore accounts from an export of the old service (JSON Lines or CSV)",
        description=__doc__,
    )
    cmd.add_argument("file", type=Path, help="JSON Lines, or CSV with a header row")
    cmd.add_argument("--rejects", type=Path, help="reject file (default: FILE.rejects)")
    cmd.add_argument("--format", choices=FORMATS, help="default: from the name or content")
    cmd.add_argument(
        "--premium-plan",
        help="plan that premium time becomes (default: each tenant's largest plan)",
    )
    cmd.add_argument("--batch-rows", type=int, default=50_000, help="rows per transaction")
    cmd.add_argument("--cache-mib", type=int, default=256, help="SQLite page cache")
    cmd.add_argument(
        "--run-rows",
        type=int,
        default=DEFAULT_RUN_ROWS,
        help="SQLite: rows sorted together before they are merged, at least; runs grow to"
        " half the rows stored when that is more (default: %(default)s)",
    )
    cmd.add_argument(
        "--from-start", action="store_true", help="ignore the checkpoint and read all again"
    )
    cmd.set_defaults(handler=cmd_import)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


async def _migrate(database: str | Path) -> None:
    db: Database
    if isinstance(database, Path):
        db = SqliteDatabase(database)
    else:
        from gateway.persistence.postgres import PostgresDatabase

        db = PostgresDatabase(database, pool_size=1)
    await db.open()  # applies any migration this code has and the database lacks
    await db.close()


def _tenants(args: argparse.Namespace) -> tuple[str | Path, list[TenantSettings]]:
    if args.config is None:
        _fail("import needs --config (the gateway's config file) before `import`")
    try:
        config = load_config(args.config)
        tenants = read_tenants_file(config.tenants_file) if config.tenants_file else config.tenants
    except (ConfigError, TenantFileError) as exc:
        _fail(str(exc))
    return config.database, tenants


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _rates(p: Progress) -> str:
    return (
        f"{p.counts.rows:,} rows read ({p.rows_per_s:,.0f}/s),"
        f" {p.counts.settled:,} stored or refused ({p.settled_per_s:,.0f}/s)"
    )


class _PlainProgress:
    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last < PLAIN_PROGRESS_EVERY_S and p.bytes_done < p.bytes_total:
            return
        self._last = now
        share = 100 * p.bytes_done / p.bytes_total if p.bytes_total else 100.0
        print(
            f"{share:5.1f}% read  {_rates(p)}  ETA {_duration(p.eta_s)}",
            file=sys.stderr,
            flush=True,
        )


def _run_with_rich(opts: ImportOptions) -> ImportResult:
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("read  {task.fields[rates]}  ETA {task.fields[eta]}"),
    )
    with Bar(*columns, transient=True) as bar:
        task = bar.add_task("import", total=None, rates="", eta="?")

        def update(p: Progress) -> None:
            bar.update(
                task,
                total=p.bytes_total,
                completed=p.bytes_done,
                rates=_rates(p),
                eta=_duration(p.eta_s),
            )

        return run_import(opts, update)


def summary(opts: ImportOptions, result: ImportResult) -> str:
    c = result.counts
    if result.already_done:
        return (
            f"{opts.path} was imported in full already ({c.inserted:,} accounts added,"
            f" {c.rejected:,} rejected): nothing to do; --from-start reads it again"
        )
    lines = [f"imported {opts.path}: {c.rows:,} rows read"]
    if result.resumed_at_line:
        lines[0] += f" (resumed after line {result.resumed_at_line:,})"
    lines += [
        f"  added     {c.inserted:>12,} accounts ({c.plans:,} with premium time, a plan from"
        " their first login,"
        f" {c.own_quotas:,} with their own quota)",
        f"  present   {c.present:>12,} already imported with the same data",
        f"  rejected  {c.rejected:>12,} -> {opts.rejects_path}",
    ]
    if result.kinds:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in result.kinds.most_common())
        lines.append(f"            ({kinds}{' in this run' if result.resumed_at_line else ''})")
    if result.rows_this_run and result.elapsed_s > 0:
        rate = result.rows_this_run / result.elapsed_s
        lines.append(
            f"  {result.rows_this_run:,} rows in {result.elapsed_s:.1f} s: {rate:,.0f} rows/s"
        )
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def cmd_import(args: argparse.Namespace) -> None:
    database, tenants = _tenants(args)
    if args.batch_rows < 1:
        _fail("--batch-rows must be at least 1")
    try:
        asyncio.run(_migrate(database))
    except (OSError, DatabaseUnavailable) as exc:
        _fail(f"database: {exc}")
    on_postgres = not isinstance(database, Path)
    opts = ImportOptions(
        path=args.file,
        db_path=Path() if on_postgres else Path(database),
        database_url=str(database) if on_postgres else None,
        policies=tenant_policies(tenants, args.premium_plan),
        rejects_path=args.rejects or args.file.with_name(args.file.name + ".rejects"),
        fmt=args.format,
        batch_rows=args.batch_rows,
        cache_mib=args.cache_mib,
        run_rows=args.run_rows,
        from_start=args.from_start,
    )
    again = "run the same command again to continue from the last checkpoint"
    try:
        result = _run_with_rich(opts) if sys.stderr.isatty() else run_import(opts, _PlainProgress())
    except ImportFailed as exc:
        _fail(str(exc))
    except sqlite3.Error as exc:  # e.g. the disk is full
        _fail(f"database: {exc}; {again}")
    except (OSError, DatabaseUnavailable) as exc:  # PostgreSQL went away
        _fail(f"database: {exc}; {again}")
    except KeyboardInterrupt:
        print(f"interrupted; {again}", file=sys.stderr)
        raise SystemExit(130) from None
    print(summary(opts, result), flush=True)
