"""Tests for gateway.identity.import_rows and usernames: a line of an export becomes a checked
LegacyAccount, or a Reject whose kind and reason say what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.identity import usernames
from gateway.identity.import_rows import (
    CsvFormat,
    LegacyAccount,
    Reject,
    from_mapping,
    parse_json_line,
    password_json,
    stored_password,
)
from gateway.identity.legacy_hashes import verify

BCRYPT = "$2b$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"
GOOD: dict[str, Any] = {
    "legacy_id": "u1029",
    "username": "Alice",
    "email": "alice@example.org",
    "password": {"scheme": "bcrypt", "hash": BCRYPT},
    "created_at": "2011-06-01T12:00:00Z",
    "premium_until": "2012-02-01T00:00:00+01:00",
    "quota_bytes": 107374182400,
    "tenant": "acme",
}


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row)


def test_a_full_row() -> None:
    account = parse_json_line(_line(GOOD))
    assert account == LegacyAccount(
        legacy_id="u1029",
        username="Alice",
        username_norm="alice",
        password_scheme="bcrypt",
        password_json='{"hash":"' + BCRYPT + '"}',
        email="alice@example.org",
        created_at=1306929600,
        premium_until=1328050800,  # +01:00 taken into account
        quota_bytes=107374182400,
        tenant="acme",
    )


def test_only_the_required_fields() -> None:
    row = {k: GOOD[k] for k in ("legacy_id", "username", "password")}
    account = parse_json_line(_line(row))
    assert isinstance(account, LegacyAccount)
    assert (account.email, account.created_at, account.premium_until, account.quota_bytes) == (
        None,
        None,
        None,
        None,
    )
    assert account.tenant == "default"


def test_nulls_empty_email_unix_times_numeric_ids_and_unknown_fields() -> None:
    row = GOOD | {
        "legacy_id": 1029,
        "email": "",
        "created_at": 1306929600,
        "premium_until": None,
        "last_login": "ignored",
        "created_at_naive": "x",
    }
    account = parse_json_line(_line(row))
    assert isinstance(account, LegacyAccount)
    assert account.legacy_id == "1029"
    assert account.email is None
    assert account.created_at == 1306929600
    assert account.premium_until is None
    naive = parse_json_line(_line(GOOD | {"created_at": "2011-06-01T12:00:00"}))
    assert isinstance(naive, LegacyAccount) and naive.created_at == 1306929600  # UTC


def test_the_stored_password_verifies_like_the_exported_one() -> None:
    import hashlib

    record = {"scheme": "sha1", "hash": hashlib.sha1(b"s3cretpw").hexdigest(), "salt": ""}
    account = parse_json_line(_line(GOOD | {"password": record}))
    assert isinstance(account, LegacyAccount)
    stored = stored_password(account.password_scheme, account.password_json)
    assert verify(stored, "s3cretpw")
    assert not verify(stored, "s3cretpx")


@pytest.mark.parametrize(
    "record",
    [
        {"scheme": "bcrypt", "hash": BCRYPT},
        {"scheme": "argon2id", "hash": "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAA"},
        {"scheme": "md5", "hash": "a" * 32, "salt": 'q"uo\\te', "salt_position": "prefix"},
    ],
)
def test_password_json_is_orjsons_sorted_form(record: dict[str, object]) -> None:
    fields = {k: v for k, v in record.items() if k != "scheme"}
    assert password_json(record) == orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()


BAD: list[tuple[bytes, str, str]] = [
    (b'{"legacy_id": "u1", "username": ', "json", "broken JSON"),
    (b"\xff\xfe{}", "json", "broken JSON"),
    (b"[1, 2]", "json", "not a JSON object"),
    (b'"just a string"', "json", "not a JSON object"),
    (_line({k: v for k, v in GOOD.items() if k != "legacy_id"}), "missing", "legacy_id"),
    (_line({k: v for k, v in GOOD.items() if k != "username"}), "missing", "username"),
    (_line({k: v for k, v in GOOD.items() if k != "password"}), "missing", "password"),
    (_line(GOOD | {"password": None}), "missing", "password"),
    (_line(GOOD | {"legacy_id": ""}), "missing", "legacy_id"),
    (_line(GOOD | {"legacy_id": ["u1"]}), "type", "legacy_id is not a string"),
    (_line(GOOD | {"legacy_id": "u" * 129}), "type", "longer than 128"),
    (_line(GOOD | {"legacy_id": "u\t1"}), "type", "control characters"),
    (_line(GOOD | {"username": 42}), "type", "username is not a string"),
    (_line(GOOD | {"username": ""}), "username", "empty"),
    (_line(GOOD | {"username": "al\nice"}), "username", "control or invisible"),
    (_line(GOOD | {"username": "al\u200bice"}), "username", "control or invisible"),
    (_line(GOOD | {"username": " alice"}), "username", "space"),
    (_line(GOOD | {"username": "a" * 129}), "username", "longer than 128"),
    (_line(GOOD | {"email": 5}), "type", "email is not a string"),
    (_line(GOOD | {"password": "hunter2"}), "type", "password is not an object"),
    (_line(GOOD | {"password": {"scheme": "rot13", "hash": "x"}}), "scheme", "unknown"),
    (_line(GOOD | {"password": {"scheme": "bcrypt", "hash": "$2b$"}}), "hash", "bcrypt hash"),
    (_line(GOOD | {"created_at": "yesterday"}), "type", "created_at is not an ISO 8601"),
    (_line(GOOD | {"created_at": -5}), "type", "created_at is not a time"),
    (_line(GOOD | {"premium_until": "10000-01-01T00:00:00"}), "type", "premium_until"),
    (_line(GOOD | {"premium_until": 1.5}), "type", "premium_until is not a time"),
    (_line(GOOD | {"quota_bytes": "lots"}), "type", "quota_bytes"),
    (_line(GOOD | {"quota_bytes": -1}), "type", "quota_bytes"),
    (_line(GOOD | {"quota_bytes": True}), "type", "quota_bytes"),
    (_line(GOOD | {"quota_bytes": 2**63}), "type", "quota_bytes"),
    (_line(GOOD | {"tenant": "Not A Tenant"}), "type", "tenant"),
    (_line(GOOD | {"tenant": 3}), "type", "tenant"),
]


@pytest.mark.parametrize(("line", "kind", "reason"), BAD)
def test_bad_rows_are_rejected_with_their_reason(line: bytes, kind: str, reason: str) -> None:
    result = parse_json_line(line)
    assert isinstance(result, Reject), result
    assert result.kind == kind
    assert reason in result.reason
    assert "\n" not in result.reason


def test_from_mapping_refuses_non_objects() -> None:
    assert from_mapping([GOOD]) == Reject("json", "line is not a JSON object")


# --- usernames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Alice", "ALICE"),
        ("Alice", "\uff21\uff4c\uff49\uff43\uff45"),  # full-width letters
        ("Straße", "STRASSE"),  # case folding, not lower()
        ("Ǆemal", "ǆemal"),
        ("café", "cafe\u0301"),  # composed and decomposed é
        ("ﬁne", "FINE"),  # the "fi" ligature
    ],
)
def test_usernames_equal_under_normalisation(a: str, b: str) -> None:
    assert usernames.normalize(a) == usernames.normalize(b)


@pytest.mark.parametrize(("a", "b"), [("alice", "alicé"), ("bob", "b0b"), ("ann", "ann ")])
def test_different_usernames_stay_different(a: str, b: str) -> None:
    assert usernames.normalize(a) != usernames.normalize(b)


def test_normalize_is_idempotent() -> None:
    for name in ["Straße", "ﬁne", "\uff21lice", "ǅ", "ΣΊΣΥΦΟΣ"]:
        once = usernames.normalize(name)
        assert usernames.normalize(once) == once


# --- CSV ------------------------------------------------------------------------------------


def test_csv_with_the_password_as_a_json_cell() -> None:
    csv = CsvFormat.from_header(b"\xef\xbb\xbflegacy_id,username,email,password,quota_bytes")
    row = b'u1,Alice,,"{""scheme"": ""bcrypt"", ""hash"": ""' + BCRYPT.encode() + b'""}",5000'
    account = csv.parse(row)
    assert isinstance(account, LegacyAccount)
    assert (account.legacy_id, account.email, account.quota_bytes) == ("u1", None, 5000)
    assert account.password_scheme == "bcrypt"


def test_csv_with_the_password_spread_over_cells() -> None:
    header = b"legacy_id,username,password.scheme,password.hash,password.salt,password.iterations"
    csv = CsvFormat.from_header(header)
    account = csv.parse(b"u2,Bob,pbkdf2-sha256,c2FsdHNhbHRzYWx0c2FsdA==,c2FsdA==,1000,")
    assert isinstance(account, Reject)  # 7 cells for 6 columns
    account = csv.parse(b"u2,Bob,pbkdf2-sha256,c2FsdHNhbHRzYWx0c2FsdA==,c2FsdA==,1000")
    assert isinstance(account, LegacyAccount), account
    assert orjson.loads(account.password_json) == {
        "hash": "c2FsdHNhbHRzYWx0c2FsdA==",
        "iterations": 1000,
        "salt": "c2FsdA==",
    }
    csv_times = CsvFormat.from_header(
        b"legacy_id,username,password.scheme,password.hash,created_at"
    )
    timed = csv_times.parse(b"u3,Carol,md5," + b"a" * 32 + b",1306929600")
    assert isinstance(timed, LegacyAccount) and timed.created_at == 1306929600


@pytest.mark.parametrize(
    ("row", "kind", "reason"),
    [
        (b'u1,"Alice,' + BCRYPT.encode(), "csv", "broken CSV"),
        (b"u1,Alice", "csv", "2 cells, header has 3"),
        (b"u1,Alice,{not json", "json", "password cell"),
        (b',Alice,"{}"', "missing", "legacy_id"),
        (b"u1,\xff,x", "csv", "not UTF-8"),
    ],
)
def test_bad_csv_rows(row: bytes, kind: str, reason: str) -> None:
    result = CsvFormat(["legacy_id", "username", "password"]).parse(row)
    assert isinstance(result, Reject)
    assert (result.kind, reason in result.reason) == (kind, True)


@pytest.mark.parametrize(
    "header",
    [b"legacy_id,username", b"id,username,password", b"legacy_id,username,password,username"],
)
def test_csv_headers_without_required_columns_are_refused(header: bytes) -> None:
    with pytest.raises(ValueError):
        CsvFormat.from_header(header)
