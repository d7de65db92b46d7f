"""One line of a legacy export → a validated LegacyAccount, or the reason it is refused (pure).

JSON Lines, one object per line:

    {"legacy_id": "u1029", "username": "Alice", "email": "alice@example.org",
     "password": {"scheme": "bcrypt", "hash": "$2b$10$…"},
     "created_at": "2011-06-01T12:00:00Z", "premium_until": "2012-02-01T00:00:00Z",
     "quota_bytes": 107374182400, "tenant": "default"}

or CSV with a header row of the same names, the password as a JSON cell (`password`) or
spread over `password.scheme`, `password.hash`, `password.salt`, `password.salt_position`
and `password.iterations` cells. `legacy_id`, `username` and `password` are required;
an empty cell or a JSON null is an absent field; other fields are ignored. Times are
ISO 8601 (UTC when no offset is given) or unix seconds.

This runs once per row of files of 100 M rows, so it is written for speed: orjson, plain
type checks, and no model library on the hot path.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from typing import Final, NamedTuple

import orjson

from gateway.identity import legacy_hashes, usernames

REQUIRED: Final = ("legacy_id", "username", "password")
MAX_LEGACY_ID: Final = 128
MAX_EMAIL: Final = 320
DEFAULT_TENANT: Final = "default"
MAX_TIMESTAMP: Final = 253_402_300_800  # 10000-01-01T00:00:00Z
MAX_INT64: Final = (1 << 63) - 1
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_PASSWORD_CELLS: Final = ("scheme", "hash", "salt", "salt_position", "iterations")


class LegacyAccount(NamedTuple):
    """An account of the old service, checked and ready to store."""

    legacy_id: str
    username: str
    username_norm: str
    password_scheme: str
    # The password record as stored: its fields but the scheme, keys sorted.
    password_json: str
    email: str | None = None
    created_at: int | None = None  # unix seconds
    premium_until: int | None = None  # unix seconds
    quota_bytes: int | None = None
    tenant: str = DEFAULT_TENANT


class Reject(NamedTuple):
    """Why a row is refused: `kind` groups rejects in the summary, `reason` is one line."""

    kind: str
    reason: str


def password_json(record: dict[str, object]) -> str:
    """How a password record is stored: its fields but the scheme, as JSON, keys sorted."""
    if len(record) == 2 and record["scheme"] in ("bcrypt", "argon2id"):
        # Shortcut for most rows: such a hash was checked to hold only [$./,=A-Za-z0-9],
        # so it needs no JSON escaping, and this is what orjson would write.
        return '{"hash":"' + str(record["hash"]) + '"}'
    fields = {k: v for k, v in record.items() if k != "scheme"}
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()


def stored_password(scheme: str, stored_json: str) -> legacy_hashes.LegacyHash:
    """The record back from its stored form (for verification at login)."""
    return legacy_hashes.parse({"scheme": scheme, **orjson.loads(stored_json)})


class _RowError(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _digits(value: str) -> bool:
    return value.isdigit() and value.isascii()  # isdigit() alone takes "²"


def _timestamp(name: str, value: object) -> int | None:
    if value is None:
        return None
    if type(value) is str:
        if value.isdigit() and value.isascii():  # unix seconds in a CSV cell
            value = int(value)
        else:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise _RowError("type", f"{name} is not an ISO 8601 time") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = int(parsed.timestamp())
    if type(value) is not int or not 0 <= value < MAX_TIMESTAMP:
        raise _RowError("type", f"{name} is not a time between 1970 and 9999")
    return value


def _optional_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and _digits(value):
        value = int(value)
    # SQLite integers are 64-bit: a larger one would fail the whole batch at insert.
    if type(value) is not int or not 0 <= value <= MAX_INT64:
        raise _RowError("type", f"{name} is not an integer in 0..2^63-1")
    return value


def _text(name: str, value: object, limit: int) -> str:
    if type(value) is not str:
        raise _RowError("type", f"{name} is not a string")
    if not value:
        raise _RowError("missing", f"missing field: {name}")
    if len(value) > limit:
        raise _RowError("type", f"{name} longer than {limit} characters")
    if not value.isprintable():
        raise _RowError("type", f"{name} has control characters")
    return value


def _account(row: dict[str, object]) -> LegacyAccount:
    # The hot path of an import: few calls, cheap checks first.
    get = row.get
    legacy_id, username, record = get("legacy_id"), get("username"), get("password")
    if legacy_id is None or username is None or record is None:
        missing = next(name for name in REQUIRED if get(name) is None)
        raise _RowError("missing", f"missing field: {missing}")
    if type(legacy_id) is int:  # numeric ids from a JSON export
        legacy_id = str(legacy_id)
    legacy_id = _text("legacy_id", legacy_id, MAX_LEGACY_ID)
    if type(username) is not str:
        raise _RowError("type", "username is not a string")
    try:
        usernames.check(username)
    except usernames.InvalidUsername as exc:
        raise _RowError("username", str(exc)) from None
    try:
        scheme = legacy_hashes.check(record)
    except legacy_hashes.InvalidHash as exc:
        raise _RowError(exc.kind, str(exc)) from None
    assert type(record) is dict  # check() accepted it
    tenant = get("tenant")
    if tenant is None:
        tenant = DEFAULT_TENANT
    elif type(tenant) is not str or not _TENANT_ID.fullmatch(tenant):
        raise _RowError("type", "tenant is not a tenant id")
    email = get("email")
    created_at = get("created_at")
    premium_until = get("premium_until")
    quota = get("quota_bytes")
    return LegacyAccount(
        legacy_id,
        username,
        usernames.normalize(username),
        scheme,
        password_json(record),
        None if email is None or email == "" else _text("email", email, MAX_EMAIL),
        None if created_at is None else _timestamp("created_at", created_at),
        None if premium_until is None else _timestamp("premium_until", premium_until),
        None if quota is None else _optional_int("quota_bytes", quota),
        tenant,
    )


def from_mapping(row: object) -> LegacyAccount | Reject:
    """A decoded row (a JSON object, or CSV cells by header name) checked."""
    if not isinstance(row, dict):
        return Reject("json", "line is not a JSON object")
    try:
        return _account(row)
    except _RowError as exc:
        return Reject(exc.kind, str(exc))


def parse_json_line(raw: bytes) -> LegacyAccount | Reject:
    """One JSON Lines line (without its newline)."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Reject("json", f"broken JSON: {str(exc).splitlines()[0][:120]}")
    return from_mapping(row)


class CsvFormat:
    """Rows of a CSV export, read one physical line at a time (a record may not span lines:
    fields of these exports never hold newlines, and that keeps a resume offset exact)."""

    def __init__(self, header: list[str]) -> None:
        self.columns = header
        missing = [
            name
            for name in REQUIRED
            if name not in header and not (name == "password" and "password.scheme" in header)
        ]
        if missing:
            raise ValueError(f"CSV header lacks {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise ValueError("CSV header names a column twice")

    @classmethod
    def from_header(cls, raw: bytes) -> CsvFormat:
        try:
            cells = next(csv.reader([raw.decode("utf-8-sig")], strict=True))
        except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
            raise ValueError(f"CSV header unreadable: {exc}") from None
        return cls([c.strip() for c in cells])

    def parse(self, raw: bytes) -> LegacyAccount | Reject:
        try:
            cells = next(csv.reader([raw.decode("utf-8")], strict=True))
        except UnicodeDecodeError:
            return Reject("csv", "broken CSV: not UTF-8")
        except csv.Error as exc:
            return Reject("csv", f"broken CSV: {exc}")
        if len(cells) != len(self.columns):
            return Reject("csv", f"broken CSV: {len(cells)} cells, header has {len(self.columns)}")
        row: dict[str, object] = {k: v for k, v in zip(self.columns, cells, strict=True) if v}
        spread = {k: row.pop(f"password.{k}") for k in _PASSWORD_CELLS if f"password.{k}" in row}
        password = row.get("password")
        if isinstance(password, str):
            try:
                row["password"] = orjson.loads(password)
            except orjson.JSONDecodeError:
                return Reject("json", "broken JSON in the password cell")
        elif spread:
            iterations = spread.get("iterations")
            if isinstance(iterations, str) and _digits(iterations):
                spread["iterations"] = int(iterations)
            row["password"] = spread
        return from_mapping(row)
