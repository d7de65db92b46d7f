"""Tests for gateway.identity.import_source: batches, their resume offsets, the columns of
a row and tenant policies."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.billing.quota import Plan
from gateway.config import GB, TenantSettings
from gateway.identity.import_source import (
    LEGACY_ID,
    LINE,
    SPAN_COLUMNS,
    STAGE_COLUMNS,
    Batch,
    detect_format,
    input_identity,
    read_batches,
    tenant_policies,
)

NOW = 1_700_000_000
POLICIES = tenant_policies([TenantSettings()])
MD5 = {"scheme": "md5", "hash": "5f4dcc3b5aa765d61d8327deb882cf99"}


def _row(i: int, **extra: object) -> bytes:
    return orjson.dumps({"legacy_id": f"u{i}", "username": f"user{i}", "password": MD5} | extra)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    lines = [_row(i) for i in range(1, 8)]
    lines.insert(3, b"{broken")
    lines.insert(5, b"")  # blank: no row, no reject
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def _ids(batches: list[Batch]) -> list[str]:
    return [row[LEGACY_ID] for b in batches for row in b.rows]


def test_batches_count_lines_and_say_where_the_next_one_starts(jsonl: Path) -> None:
    batches = list(read_batches(jsonl, "jsonl", 0, 0, POLICIES, NOW, 3))
    assert [b.data_lines for b in batches] == [3, 3, 2]  # the blank line is no data line
    assert _ids(batches) == [f"u{i}" for i in range(1, 8)]
    assert [(r.line, r.kind) for b in batches for r in b.rejects] == [(4, "json")]
    assert batches[-1].end_offset == jsonl.stat().st_size
    assert batches[-1].end_line == 9
    raw = jsonl.read_bytes()
    for b in batches:  # each batch ends at a line start
        assert raw[b.end_offset - 2 : b.end_offset] == b"\r\n"
        for row in b.rows:
            line, offset, length = row[LINE:]
            assert raw[offset : offset + length] == raw.split(b"\r\n")[line - 1]


def test_resuming_at_a_batch_end_reads_exactly_the_rest(jsonl: Path) -> None:
    first = next(read_batches(jsonl, "jsonl", 0, 0, POLICIES, NOW, 3))
    rest = list(read_batches(jsonl, "jsonl", first.end_offset, first.end_line, POLICIES, NOW, 3))
    assert _ids([first]) + _ids(rest) == [f"u{i}" for i in range(1, 8)]
    assert first.rejects == [] and [r.line for b in rest for r in b.rejects] == [4]
    assert rest[0].rejects[0].line == first.end_line + 1  # numbering goes on


def test_resuming_a_csv_reads_its_header_again(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "legacy_id,username,password.scheme,password.hash\n"
        + "".join(f"u{i},user{i},md5,{MD5['hash']}\n" for i in range(1, 6))
    )
    batches = list(read_batches(path, "csv", 0, 0, POLICIES, NOW, 2))
    assert _ids(batches) == [f"u{i}" for i in range(1, 6)]
    assert batches[0].rows[0][LINE] == 2  # line 1 is the header
    rest = list(read_batches(path, "csv", batches[0].end_offset, 3, POLICIES, NOW, 2))
    assert _ids(rest) == ["u3", "u4", "u5"]


def test_rows_follow_row_columns_and_the_tenant_policy(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                _row(1, quota_bytes=500 * GB, premium_until=NOW + 10),
                _row(2, quota_bytes=50 * GB, premium_until=NOW),
                _row(3, tenant="nosuch"),
            ]
        )
    )
    (batch,) = read_batches(path, "jsonl", 0, 0, POLICIES, NOW, 10)
    first, second = (dict(zip(STAGE_COLUMNS, row, strict=True)) for row in batch.rows)
    assert first["quota_bytes"] == 500 * GB and second["quota_bytes"] == 50 * GB
    assert (batch.own_quotas, batch.plans) == (1, 1)  # 50 GB is below the 100 GB free tier
    # Premium time ahead becomes the largest plan at the first login; time gone, none.
    assert (first["plan_id"], first["plan_quota_bytes"]) == ("5tb-30d", 5_000 * GB)
    assert first["premium_until"] == NOW + 10
    assert (second["plan_id"], second["plan_quota_bytes"]) == (None, None)
    assert (first["tenant_id"], first["username_norm"], first["username"]) == (
        "default",
        "user1",
        "user1",
    )
    assert first["legacy_scheme"] == "md5" and first["created_at"] is None
    assert STAGE_COLUMNS[-len(SPAN_COLUMNS) :] == SPAN_COLUMNS
    assert [(r.line, r.reason) for r in batch.rejects] == [(3, "unknown tenant 'nosuch'")]


def test_premium_plan_choice() -> None:
    small = Plan(id="small", name="S", quota_bytes=1, duration_s=1, price_msat=1)
    tenants = [TenantSettings(), TenantSettings(id="bare", hostnames=["bare.example"], plans=[])]
    assert tenant_policies(tenants)["default"].premium_plan_id == "5tb-30d"
    assert tenant_policies(tenants, "1tb-30d")["default"].premium_plan_id == "1tb-30d"
    assert tenant_policies(tenants)["bare"].premium_plan_id is None
    only_small = TenantSettings(plans=[small])
    assert tenant_policies([only_small], "missing")["default"].premium_plan_id == "small"


def test_format_and_identity(tmp_path: Path) -> None:
    a, b = tmp_path / "a.export", tmp_path / "b.export"
    a.write_bytes(b"\xef\xbb\xbf  " + _row(1) + b"\n")
    b.write_bytes(b"legacy_id,username,password\n")
    assert (detect_format(a), detect_format(b)) == ("jsonl", "csv")
    assert detect_format(tmp_path / "x.CSV") == "csv"
    copy = tmp_path / "copy.txt"
    copy.write_bytes(a.read_bytes())
    assert input_identity(copy) == input_identity(a)
    copy.write_bytes(a.read_bytes() + b"\n")
    assert input_identity(copy)[0] != input_identity(a)[0]
