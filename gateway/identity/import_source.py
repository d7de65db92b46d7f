"""Reading an export file as batches of rows ready to insert, from any byte offset.

The file is read line by line in binary (memory stays flat whatever its size); each batch
says the byte offset and line number after its last line, so a checkpoint can resume with
`seek()`. Rows are checked here (import_rows) and turned into the parameters of the insert
into `accounts`; refused rows come back with their line number, reason and raw bytes.
This runs in a child process of the importer (import_reader), which stages each batch for
the importer (persistence/import_stage), so parsing overlaps with the database's writes; it
imports nothing heavy, so that process starts in a blink.
"""

from __future__ import annotations

import hashlib
import secrets
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

    `rows[i]` are the INSERT parameters of an account (see ROW_COLUMNS); `premium` holds
    (index into rows, plan id, quota bytes, ends_at) for rows with premium time left."""

    rows: list[tuple[Any, ...]]
    spans: list[Span]
    premium: list[tuple[int, str, int, int]]
    rejects: list[RejectLine]
    data_lines: int  # non-blank lines other than a CSV header
    end_offset: int
    end_line: int


# The order of a row's parameters; persistence/legacy_import.py names them ?1..?13 in its INSERT.
ROW_COLUMNS: Final = (
    "id",
    "api_key_hash",  # a placeholder until a login issues a key
    "tenant_id",
    "created_at",  # None: the import time
    "free_quota_bytes",
    "username",
    "username_norm",
    "email",
    "legacy_id",
    "legacy_scheme",
    "legacy_hash",
    "legacy_premium_until",
    "legacy_quota_bytes",
)


# Where each column sits in a row, for the code that reads rows back.
ID, API_KEY_HASH, TENANT_ID, FREE_QUOTA, USERNAME_NORM, LEGACY_ID = (
    ROW_COLUMNS.index(name)
    for name in (
        "id",
        "api_key_hash",
        "tenant_id",
        "free_quota_bytes",
        "username_norm",
        "legacy_id",
    )
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


def account_ids() -> Iterator[tuple[str, bytes]]:
    """(id, api_key_hash placeholder) for new accounts.

    Ids have a random 32-bit prefix per run and a counter, so one import's ids are adjacent
    in the indexes (inserts stay local) yet unguessable across imports; same shape as other
    account ids, acct_ + 16 hex digits. The placeholder is those 8 bytes: unique, and never
    equal to an API key's 32-byte SHA-256, so no key opens the account before a login."""
    while True:
        prefix = secrets.randbits(32) << 32
        for n in range(1 << 32):
            key = prefix | n
            yield f"acct_{key:016x}", key.to_bytes(8, "big")


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
    ids = account_ids()
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
        spans: list[tuple[int, int, int]] = []
        premium: list[tuple[int, str, int, int]] = []
        rejects: list[RejectLine] = []
        data_lines = 0
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
                own = quota if quota is not None and quota > policy.free_quota_bytes else None
                account_id, placeholder = next(ids)
                if (
                    a.premium_until is not None
                    and a.premium_until > now
                    and policy.premium_plan_id is not None
                ):
                    assert policy.premium_quota_bytes is not None
                    plan = (policy.premium_plan_id, policy.premium_quota_bytes)
                    premium.append((len(rows), *plan, a.premium_until))
                # In ROW_COLUMNS order.
                rows.append(
                    (
                        account_id,
                        placeholder,
                        a.tenant,
                        a.created_at,
                        own,
                        a.username,
                        a.username_norm,
                        a.email,
                        a.legacy_id,
                        a.password_scheme,
                        a.password_json,
                        a.premium_until,
                        quota,
                    )
                )
                spans.append((line, start, len(text)))
            if data_lines == batch_rows:
                yield Batch(rows, spans, premium, rejects, data_lines, offset, line)
                rows, spans, premium, rejects, data_lines = [], [], [], [], 0
                yielded = offset
        if data_lines or offset != yielded:
            yield Batch(rows, spans, premium, rejects, data_lines, offset, line)
