"""Tests for gateway.identity.legacy_hashes: every scheme verifies its password and no other,
and malformed records are refused at import with a reason that never quotes the hash."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import argon2
import bcrypt
import pytest

from gateway.identity.legacy_hashes import InvalidHash, LegacyHash, check, parse, to_record, verify

PASSWORD = "correct horse battery staple"
WRONG = "correct horse battery stapler"


def _bcrypt(prefix: str = "$2b$") -> dict[str, Any]:
    made = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return {"scheme": "bcrypt", "hash": prefix + made[4:]}


def _argon2id() -> dict[str, Any]:
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    return {"scheme": "argon2id", "hash": hasher.hash(PASSWORD)}


def _pbkdf2(iterations: int = 1_000) -> dict[str, Any]:
    salt = b"NaCl-salt-16byte"
    key = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, iterations, 32)
    return {
        "scheme": "pbkdf2-sha256",
        "iterations": iterations,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(key).decode(),
    }


def _digest(scheme: str, salt: str | None = None, position: str | None = None) -> dict[str, Any]:
    pw = PASSWORD.encode()
    message = (
        pw if salt is None else (salt.encode() + pw if position == "prefix" else pw + salt.encode())
    )
    record: dict[str, Any] = {"scheme": scheme, "hash": hashlib.new(scheme, message).hexdigest()}
    if salt is not None:
        record |= {"salt": salt, "salt_position": position}
    return record


RECORDS = {
    "bcrypt $2b$": _bcrypt("$2b$"),
    "bcrypt $2a$": _bcrypt("$2a$"),
    "bcrypt $2y$": _bcrypt("$2y$"),
    "argon2id": _argon2id(),
    "pbkdf2-sha256": _pbkdf2(),
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "md5 salt prefix": _digest("md5", "s4lt", "prefix"),
    "sha1 salt suffix": _digest("sha1", "s4lt", "suffix"),
    "sha256 salt prefix": _digest("sha256", "pépé", "prefix"),
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_right_password_passes_wrong_fails(name: str) -> None:
    h = parse(RECORDS[name])
    assert verify(h, PASSWORD)
    assert not verify(h, WRONG)
    assert not verify(h, "")


@pytest.mark.parametrize("name", list(RECORDS))
def test_check_names_the_scheme_and_records_round_trip(name: str) -> None:
    record = RECORDS[name]
    assert check(record) == record["scheme"]
    assert parse(to_record(parse(record))) == parse(record)


# Vectors computed elsewhere, so a bug shared by test and code cannot hide.
def test_published_vectors() -> None:
    # RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64.
    rfc = bytes.fromhex(
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
    )
    record = {
        "scheme": "pbkdf2-sha256",
        "iterations": 1,
        "salt": base64.b64encode(b"salt").decode(),
        "hash": base64.b64encode(rfc).decode(),
    }
    assert verify(parse(record), "passwd")
    assert not verify(parse(record), "password")
    # The digests of "password" every leaked-password list knows.
    for scheme, digest in [
        ("md5", "5f4dcc3b5aa765d61d8327deb882cf99"),
        ("sha1", "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"),  # upper-case hex too
        ("sha256", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"),
    ]:
        assert verify(parse({"scheme": scheme, "hash": digest}), "password")


def test_salt_position_matters() -> None:
    prefix = _digest("md5", "s4lt", "prefix")
    as_suffix = parse(prefix | {"salt_position": "suffix"})
    assert verify(parse(prefix), PASSWORD)
    assert not verify(as_suffix, PASSWORD)


def test_empty_salt_is_no_salt() -> None:
    record = _digest("sha1") | {"salt": "", "salt_position": "prefix"}
    assert verify(parse(record), PASSWORD)


def test_bcrypt_uses_the_first_72_bytes_as_old_implementations_did() -> None:
    long_password = "x" * 72
    made = bcrypt.hashpw(long_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    h = parse({"scheme": "bcrypt", "hash": made})
    assert verify(h, long_password + "anything after byte 72")
    assert not verify(h, "x" * 71)


def test_pbkdf2_key_length_follows_the_stored_hash() -> None:
    salt = b"0123456789abcdef"
    key = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, 10, 20)
    record = {
        "scheme": "pbkdf2-sha256",
        "iterations": 10,
        "salt": base64.urlsafe_b64encode(salt).decode().rstrip("="),  # URL-safe, unpadded
        "hash": base64.b64encode(key).decode(),
    }
    assert verify(parse(record), PASSWORD)


def test_a_non_ascii_password() -> None:
    record = {"scheme": "sha256", "hash": hashlib.sha256("pässwörd✓".encode()).hexdigest()}
    assert verify(parse(record), "pässwörd✓")
    assert not verify(parse(record), "passwort")


BCRYPT = RECORDS["bcrypt $2b$"]["hash"]
ARGON = RECORDS["argon2id"]["hash"]
MALFORMED: list[tuple[object, str, str]] = [
    ("not an object", "type", "not an object"),
    (["bcrypt", BCRYPT], "type", "not an object"),
    ({"hash": BCRYPT}, "hash", "no scheme"),
    ({"scheme": 7, "hash": BCRYPT}, "hash", "scheme is not a string"),
    ({"scheme": "scrypt", "hash": "x"}, "scheme", "unknown password scheme 'scrypt'"),
    ({"scheme": "BCRYPT", "hash": BCRYPT}, "scheme", "unknown"),
    ({"scheme": "bcrypt"}, "hash", "no hash"),
    ({"scheme": "bcrypt", "hash": 12}, "hash", "not a string"),
    ({"scheme": "bcrypt", "hash": "$2x$" + BCRYPT[4:]}, "hash", "bcrypt hash"),
    ({"scheme": "bcrypt", "hash": "$2b$03$" + BCRYPT[7:]}, "hash", "cost"),
    ({"scheme": "bcrypt", "hash": BCRYPT[:-1]}, "hash", "bcrypt hash"),
    ({"scheme": "bcrypt", "hash": BCRYPT + "A"}, "hash", "bcrypt hash"),
    ({"scheme": "bcrypt", "hash": BCRYPT, "pepper": "x"}, "hash", "unexpected fields: pepper"),
    ({"scheme": "argon2id", "hash": ARGON.replace("argon2id", "argon2i")}, "hash", "PHC"),
    ({"scheme": "argon2id", "hash": ARGON.replace("m=64,", "m=9999999,")}, "hash", "range"),
    ({"scheme": "argon2id", "hash": ARGON.replace("t=1,", "t=0,")}, "hash", "range"),
    ({"scheme": "argon2id", "hash": ARGON.rsplit("$", 1)[0]}, "hash", "PHC"),
    ({**_pbkdf2(), "iterations": None}, "hash", "no iterations"),
    ({**_pbkdf2(), "iterations": True}, "hash", "not an integer"),
    ({**_pbkdf2(), "iterations": "1000"}, "hash", "not an integer"),
    ({**_pbkdf2(), "iterations": 0}, "hash", "iterations not in"),
    ({**_pbkdf2(), "iterations": 10_000_001}, "hash", "iterations not in"),
    ({**_pbkdf2(), "salt": "not base64!"}, "hash", "not base64"),
    ({**_pbkdf2(), "hash": base64.b64encode(b"short").decode()}, "hash", "16-128 bytes"),
    ({k: v for k, v in _pbkdf2().items() if k != "salt"}, "hash", "no salt"),
    ({"scheme": "md5", "hash": "5f4dcc3b5aa765d61d8327deb882cf9"}, "hash", "32 hex digits"),
    ({"scheme": "md5", "hash": "5f4dcc3b5aa765d61d8327deb882cf9g"}, "hash", "32 hex digits"),
    ({"scheme": "sha1", "hash": "5f4dcc3b5aa765d61d8327deb882cf99"}, "hash", "40 hex digits"),
    ({**_digest("sha256"), "salt": "s"}, "hash", "salt without salt_position"),
    ({**_digest("sha256"), "salt": "s", "salt_position": "middle"}, "hash", "prefix or suffix"),
    ({**_digest("sha256"), "salt": 5, "salt_position": "prefix"}, "hash", "salt is not a string"),
    ({**_digest("md5"), "iterations": 3}, "hash", "unexpected fields: iterations"),
]


@pytest.mark.parametrize(("record", "kind", "reason"), MALFORMED)
def test_malformed_records_are_refused(record: object, kind: str, reason: str) -> None:
    with pytest.raises(InvalidHash) as caught:
        check(record)
    assert caught.value.kind == kind
    assert reason in str(caught.value)
    if isinstance(record, dict) and isinstance(record.get("hash"), str):
        assert record["hash"] not in str(caught.value)  # reasons never quote a hash


def test_a_stored_hash_that_a_library_rejects_verifies_false_not_raises() -> None:
    # Passes the import's shape check but is not a valid argon2 encoding of anything.
    odd = LegacyHash("argon2id", "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA")
    assert verify(odd, PASSWORD) is False
