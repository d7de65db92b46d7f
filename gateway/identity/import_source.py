"""Reading an export file as batches of rows ready to insert, from any byte offset.

The file is read line by line in binary (memory stays flat whatever its size); each batch
says the byte offset and line number after its last line, so a checkpoint can resume with
`seek()`. Rows are checked here (import_rows) and turned into the columns of a dormant
restored account (`legacy_accounts`, migration 014); refused rows come back with their
line number, reason and raw bytes. This runs in a child process of the importer
(import_reader), which stages each batch for the importer (persistence/import_stage), so
parsing overlaps with the database's writes; it imports nothing heavy, so that process
starts in a blink.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from gateway.identity import import_rows
from gateway.identity.import_rows import CsvFormat, Reject

if TYPE_CHECKING:  # the reader process does without pydantic's second of start-up
    from gateway.config import TenantSettings

MIB: Final = 1 << 20
FORMATS: Final = ("jsonl", "csv")


@dataclass(frozen=True)
class TenantPolicy:
    """What a tenant gives a restored account: its free tier, and the plan that premium
    time in the future becomes (None: the tenant sells no plans)."""

    free_quota_bytes: int
    premium_plan_id: str | None
    premium_quota_bytes: int | None


def tenant_policies(
    tenants: list[TenantSettings], premium_plan: str | None = None
) -> dict[str, TenantPolicy]:
    """Each tenant's policy; premium time becomes `premium_plan` where the tenant sells it,
    else the tenant's largest plan."""
    policies = {}
    for tenant in tenants:
        plan = tenant.plan(premium_plan) if premium_plan else None
        if plan is None and tenant.plans:
            plan = max(tenant.plans, key=lambda p: (p.quota_bytes, p.duration_s))
        policies[tenant.id] = TenantPolicy(
            tenant.free_quota_bytes,
            plan.id if plan else None,
            plan.quota_bytes if plan else None,
        )
    return policies


# Where a row came from, (line, byte offset, length), to write its reject line if the
# database refuses it.
Span = tuple[int, int, int]


class RejectLine(NamedTuple):
    line: int
    kind: str
    reason: str
    raw: bytes


class Batch(NamedTuple):
    """Rows read from one stretch of the file, and where the next stretch starts.

    `rows[i]` are an account's columns of `legacy_accounts` (ROW_COLUMNS) followed by where
    it came from in the file (SPAN_COLUMNS), in file order."""

    rows: list[tuple[Any, ...]]
    rejects: list[RejectLine]
    data_lines: int  # non-blank lines other than a CSV header
    end_offset: int
    end_line: int
    plans: int  # rows whose premium time becomes a plan at their first login
    own_quotas: int  # rows whose quota is above their tenant's free tier


# A row's columns of `legacy_accounts` (but imported_at, the import's clock), in the order
# the reader writes them; persistence/legacy_import.py inserts them by these names.
ROW_COLUMNS: Final = (
    "tenant_id",
    "username_norm",
    "legacy_id",
    "username",
    "email",
    "legacy_scheme",
    "legacy_hash",
    "created_at",  # None: the import time
    "premium_until",
    "quota_bytes",
    "plan_id",  # the plan premium time still ahead becomes at the first login, else None
    "plan_quota_bytes",
)
# Where the row came from, (line, byte offset, length): read only when the database
# refuses the row, to write its reject line.
SPAN_COLUMNS: Final = ("line", "byte_offset", "length")
STAGE_COLUMNS: Final = ROW_COLUMNS + SPAN_COLUMNS

# Where each column sits in a row, for the code that reads rows back.
TENANT_ID, USERNAME_NORM, LEGACY_ID, QUOTA, PLAN_ID, LINE = (
    STAGE_COLUMNS.index(name)
    for name in ("tenant_id", "username_norm", "legacy_id", "quota_bytes", "plan_id", "line")
)


def input_identity(path: Path) -> tuple[str, int]:
    """(sha256 hex of the size and first MiB, size): names a file across runs and renames."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(MIB)
    return hashlib.sha256(size.to_bytes(8, "big") + head).hexdigest(), size


def detect_format(path: Path) -> str:
    """ "csv" or "jsonl": by extension, else by the first non-blank byte ('{' is JSON)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if head.startswith(b"{") else "csv"


def read_batches(
    path: Path,
    fmt: str,
    start_offset: int,
    start_line: int,
    policies: dict[str, TenantPolicy],
    now: int,
    batch_rows: int,
) -> Iterator[Batch]:
    """Batches of up to `batch_rows` data lines from `start_offset` (a line start) on."""
    with path.open("rb") as fh:
        parse = import_rows.parse_json_line
        offset, line = start_offset, start_line
        if fmt == "csv":
            header = fh.readline()
            parse = CsvFormat.from_header(header.rstrip(b"\r\n")).parse
            if start_offset == 0:
                offset, line = len(header), 1
        fh.seek(offset)
        rows: list[tuple[Any, ...]] = []
        rejects: list[RejectLine] = []
        data_lines = plans = own_quotas = 0
        yielded = offset
        for raw in fh:
            line += 1
            start = offset
            offset += len(raw)
            text = raw.rstrip(b"\r\n")
            if not text or text.isspace():
                continue
            data_lines += 1
            a = parse(text)
            if isinstance(a, Reject):
                rejects.append(RejectLine(line, a.kind, a.reason, text))
            elif (policy := policies.get(a.tenant)) is None:
                reason = f"unknown tenant {a.tenant!r}"
                rejects.append(RejectLine(line, "tenant", reason, text))
            else:
                quota = a.quota_bytes
                if quota is not None and quota > policy.free_quota_bytes:
                    own_quotas += 1
                plan_id = plan_quota = None
                if (
                    a.premium_until is not None
                    and a.premium_until > now
                    and policy.premium_plan_id is not None
                ):
                    plan_id, plan_quota = policy.premium_plan_id, policy.premium_quota_bytes
                    plans += 1
                # In STAGE_COLUMNS order.
                rows.append(
                    (
                        a.tenant,
                        a.username_norm,
                        a.legacy_id,
                        a.username,
                        a.email,
                        a.password_scheme,
                        a.password_json,
                        a.created_at,
                        a.premium_until,
                        quota,
                        plan_id,
                        plan_quota,
                        line,
                        start,
                        len(text),
                    )
                )
            if data_lines == batch_rows:
                yield Batch(rows, rejects, data_lines, offset, line, plans, own_quotas)
                rows, rejects = [], []
                data_lines = plans = own_quotas = 0
                yielded = offset
        if data_lines or offset != yielded:
            yield Batch(rows, rejects, data_lines, offset, line, plans, own_quotas)
