"""Tests for gateway.persistence.import_stage: a batch as a staging file, what crosses the
pipe about it, and the acknowledgement that bounds how many files exist."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from gateway.config import TenantSettings
from gateway.identity.import_source import LINE, STAGE_COLUMNS, read_batches, tenant_policies
from gateway.persistence.import_stage import Staged, read_stage, stage, staged_batches

NOW = 1_700_000_000
FUTURE = NOW + 86_400
POLICIES = tenant_policies([TenantSettings()])
MD5 = {"scheme": "md5", "hash": "5f4dcc3b5aa765d61d8327deb882cf99"}


def _export(tmp_path: Path, rows: int) -> Path:
    lines = []
    for i in range(1, rows + 1):
        row: dict[str, object] = {"legacy_id": f"u{i}", "username": f"user{i}", "password": MD5}
        if i % 3 == 0:
            row["premium_until"] = FUTURE
        if i % 4 == 0:
            row["quota_bytes"] = 10**15
        lines.append(orjson.dumps(row))
    lines.insert(2, b"{broken")
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_staged_batch_holds_its_rows_plans_and_spans(tmp_path: Path) -> None:
    """A staged row is the row as read, its plan and where it came from included."""
    export = _export(tmp_path, 7)
    (batch,) = read_batches(export, "jsonl", 0, 0, POLICIES, NOW, 100)
    staged = stage(batch, tmp_path / "b.sqlite3")
    assert (staged.rows, staged.plans, staged.own_quotas) == (7, 2, 1)
    assert [(r.line, r.kind) for r in staged.rejects] == [(3, "json")]
    assert (staged.data_lines, staged.end_offset) == (8, export.stat().st_size)

    rows = read_stage(staged.path)
    assert [r[0] for r in rows] == list(range(1, 8))  # rowids in file order
    assert [r[1:] for r in rows] == batch.rows
    plan = STAGE_COLUMNS.index("plan_id")
    plans = {r[1 + STAGE_COLUMNS.index("legacy_id")]: r[1 + plan : 3 + plan] for r in rows}
    plan_id = POLICIES["default"].premium_plan_id
    quota = POLICIES["default"].premium_quota_bytes
    assert {k: v for k, v in plans.items() if v[0]} == {
        "u3": (plan_id, quota),
        "u6": (plan_id, quota),
    }

    raw = export.read_bytes()
    line, offset, length = rows[2][1 + LINE :]  # the third row is on line 4, past the broken one
    assert line == 4 and orjson.loads(raw[offset : offset + length])["legacy_id"] == "u3"

    assert Staged.decode(staged.encode()) == staged


def test_the_reader_waits_for_batch_n_before_staging_n_plus_2(tmp_path: Path) -> None:
    export = _export(tmp_path, 10)
    acks: list[int] = []

    def wait_for_ack() -> None:
        acks.append(len(list(tmp_path.glob("batch-*"))))  # files staged so far

    batches = read_batches(export, "jsonl", 0, 0, POLICIES, NOW, 3)
    staged = list(staged_batches(batches, tmp_path, wait_for_ack))
    assert len(staged) == 4
    assert acks == [2, 3]  # waited before staging batch 2 (two files), then batch 3
    assert sum(s.rows for s in staged) == 10
    for s in staged:
        with sqlite3.connect(s.path) as conn:
            assert conn.execute("SELECT count(*) FROM r").fetchone() == (s.rows,)
