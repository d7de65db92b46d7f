"""`bitcache-admin import` into PostgreSQL: the real command against a real server (the
session's `postgres_server`), COPY into a staging table, the same guarantees as on SQLite:
every kind of bad row reported, re-import a no-op, kill -9 then resume with the exact
count, premium time and quotas restored. Needs no regtest network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from regtest import postgres
from tests.integration.test_legacy_import import (
    ACME,
    DEFAULT,
    FUTURE,
    LINES,
    ROOT,
    _alive,
    _big_file,
    _children,
    _command,
    _import,
    _rejects,
    _row,
    _snapshot,
    _wait,
    _write,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def config(postgres_server: str, tmp_path: Path) -> Iterator[Path]:
    """A gateway config whose database_url is a fresh schema on the PostgreSQL server."""

    async def fresh() -> str:
        url = await postgres.create_database(postgres_server, "legacy_import")
        return await postgres.create_schema(url)

    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "database_url": postgres.run_sync(fresh()),
                "kubo_api_url": "http://127.0.0.1:5001",
                "lnd": {"rest_url": "https://127.0.0.1:8080", "tls_cert": "-", "macaroon": "-"},
                "tenants": [DEFAULT.model_dump(mode="json"), ACME.model_dump(mode="json")],
            }
        )
    )
    yield path


def _query(config: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    url = json.loads(config.read_text())["database_url"]

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    return postgres.run_sync(fetch())


def test_bad_rows_are_reported_and_reimport_is_a_no_op(config: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "legacy.jsonl", [line for line, _ in LINES])
    out = _import(config, str(data), "--batch-rows", "4")

    expected = [(n, reason, line) for n, (line, reason) in enumerate(LINES, 1) if reason]
    got = _rejects(tmp_path / "legacy.jsonl.rejects")
    assert [(n, raw) for n, _, raw in got] == [(n, line) for n, _, line in expected]
    for (_, reason, _), (_, expected_reason, _) in zip(got, expected, strict=True):
        assert expected_reason in reason
    assert "15 rows read" in out and "rejected            11" in out, out
    assert "present              1" in out and "added                3" in out, out
    accounts = _query(
        config,
        "SELECT legacy_id, tenant_id, username, email FROM legacy_accounts ORDER BY legacy_id",
    )
    assert accounts == [
        ("u1", "default", "Alice", "alice@example.org"),  # not overwritten by line 14
        ("u3", "default", "bob", None),
        ("u5", "acme", "alice", None),
    ]

    before, rejected = _snapshot(config, _query), (tmp_path / "legacy.jsonl.rejects").read_bytes()
    assert "imported in full already" in _import(config, str(data))
    out = _import(config, str(data), "--from-start", "--batch-rows", "3")
    assert "added                0" in out and "present              4" in out, out
    assert _snapshot(config, _query) == before
    assert (tmp_path / "legacy.jsonl.rejects").read_bytes() == rejected


def test_premium_time_and_quota_are_restored(config: Path, tmp_path: Path) -> None:
    data = _write(
        tmp_path / "legacy.jsonl",
        [
            _row("p1", "paid", premium_until=FUTURE, quota_bytes=500 * 10**9),
            _row("p2", "expired", premium_until=1_000_000_000, quota_bytes=1),
            _row("p3", "paid-acme", premium_until=FUTURE, tenant="acme"),  # acme sells none
        ],
    )
    out = _import(config, str(data))
    assert "added                3 accounts (1 with premium time, a plan from" in out, out
    assert "1 with their own quota" in out, out
    # Dormant: the plan and quota wait for the first login (tests/unit/test_login.py).
    assert _query(
        config,
        "SELECT legacy_id, plan_id, premium_until, quota_bytes FROM legacy_accounts"
        " ORDER BY legacy_id",
    ) == [
        ("p1", "5tb-30d", FUTURE, 500 * 10**9),
        ("p2", None, 1_000_000_000, 1),
        ("p3", None, FUTURE, None),
    ]
    assert "present              3" in _import(config, str(data), "--from-start")
    assert _query(config, "SELECT count(*) FROM subscriptions") == [(0,)]


def test_kill_9_mid_import_then_resume_gives_the_exact_count(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "legacy.jsonl"
    good, bad = _big_file(data, 60_000, bad_every=997)
    proc = subprocess.Popen(
        _command(config, str(data), "--batch-rows", "1000"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    readers: list[int] = []

    def some_batches_committed() -> bool:
        readers.extend(c for c in _children(proc.pid) if c not in readers)
        try:
            rows = _query(config, "SELECT inserted FROM import_checkpoints")
        except asyncpg.UndefinedTableError:  # not migrated yet
            return False
        return bool(rows) and rows[0][0] >= 5_000

    try:
        _wait("5 000 rows committed", some_batches_committed, timeout_s=120, every_s=0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ((inserted, finished),) = _query(config, "SELECT inserted, finished_at FROM import_checkpoints")
    assert finished is None, "the import ended before it was killed: make the file larger"
    assert 0 < inserted < good
    assert _query(config, "SELECT count(*) FROM legacy_accounts") == [(inserted,)]
    assert readers, "the reader process was never seen"
    _wait("the reader to end", lambda: not any(_alive(pid) for pid in readers), timeout_s=30)

    out = _import(config, str(data), "--batch-rows", "1000")
    assert "resumed after line" in out, out
    assert _query(config, "SELECT count(*), count(DISTINCT legacy_id) FROM legacy_accounts") == [
        (good, good)
    ]
    assert _query(config, "SELECT count(*) FROM legacy_ids") == [(good,)]
    assert _query(config, "SELECT inserted, rejected FROM import_checkpoints") == [(good, len(bad))]
    assert [n for n, _, _ in _rejects(tmp_path / "legacy.jsonl.rejects")] == bad
