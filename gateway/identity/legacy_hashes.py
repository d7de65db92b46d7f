"""Password hashes from the old service: validate a stored record, verify a password (pure).

A record is the JSON object the export gives for a password, e.g.
`{"scheme": "bcrypt", "hash": "$2b$10$…"}`. Schemes:

- `bcrypt`: `hash` is a `$2a$`, `$2b$` or `$2y$` string (checked by the `bcrypt` library);
- `argon2id`: `hash` is a PHC string `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (`argon2-cffi`);
- `pbkdf2-sha256`: `iterations`, `salt` and `hash` (both base64; `hash` gives the key length);
- `md5`, `sha1`, `sha256`: `hash` in hex of the digest of the password, or, with a `salt`
  string, of salt + password (`salt_position` `prefix`) or password + salt (`suffix`).

Records are kept as they are at import (re-hashing 100 M bcrypt hashes would take years of
CPU) and replaced at the first successful login. Validation at import is strict, so every
record that gets in can be verified later: unknown fields, a salt without its position, a
digest of the wrong length or a cost beyond what a login may spend are all refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Final, NamedTuple

import argon2
import bcrypt

SCHEMES: Final = ("bcrypt", "argon2id", "pbkdf2-sha256", "md5", "sha1", "sha256")

# Costs a single login may spend; a record asking for more is refused at import rather than
# letting one account tie up the gateway's CPU or memory at every login attempt.
MAX_PBKDF2_ITERATIONS: Final = 10_000_000
MAX_ARGON2_MEMORY_KIB: Final = 1 << 20  # 1 GiB
MAX_ARGON2_TIME_COST: Final = 64
MAX_ARGON2_PARALLELISM: Final = 64
# bcrypt only ever used the first 72 bytes of a password; the library now refuses longer
# ones instead of cutting them, so we cut as the old service's bcrypt did.
BCRYPT_MAX_PASSWORD_BYTES: Final = 72

_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
_ARGON2ID = re.compile(
    r"\$argon2id\$v=(?:16|19)\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,3})"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{6,}"
)
_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGEST_HEX_LENGTH: Final = {"md5": 32, "sha1": 40, "sha256": 64}
_FIELDS: Final = {
    "bcrypt": {"scheme", "hash"},
    "argon2id": {"scheme", "hash"},
    "pbkdf2-sha256": {"scheme", "hash", "salt", "iterations"},
    "md5": {"scheme", "hash", "salt", "salt_position"},
    "sha1": {"scheme", "hash", "salt", "salt_position"},
    "sha256": {"scheme", "hash", "salt", "salt_position"},
}


class InvalidHash(ValueError):
    """A password record that cannot be used; `kind` is "scheme" for an unknown scheme,
    "type" when it is not an object, "hash" for a malformed record of a known scheme.
    Messages never quote the hash."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class LegacyHash(NamedTuple):
    """A validated record: `scheme` plus the fields that scheme uses (others are None)."""

    scheme: str
    hash: str
    salt: str | None = None
    salt_position: str | None = None
    iterations: int | None = None


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    return base64.b64decode(cleaned, validate=True)


def _str_field(record: dict[str, object], name: str, scheme: str) -> str:
    value = record.get(name)
    if value is None:
        raise InvalidHash("hash", f"{scheme} password has no {name}")
    if not isinstance(value, str):
        raise InvalidHash("hash", f"{scheme} password {name} is not a string")
    return value


def _bcrypt(record: dict[str, object]) -> LegacyHash:
    value = _str_field(record, "hash", "bcrypt")
    if not _BCRYPT.fullmatch(value):
        raise InvalidHash("hash", "bcrypt hash is not a $2a$/$2b$/$2y$ string with cost 04-31")
    return LegacyHash("bcrypt", value)


def _argon2id(record: dict[str, object]) -> LegacyHash:
    value = _str_field(record, "hash", "argon2id")
    match = _ARGON2ID.fullmatch(value)
    if not match:
        raise InvalidHash("hash", "argon2id hash is not a PHC string $argon2id$v=…$m=…,t=…,p=…$…")
    memory, time_cost, parallelism = (int(g) for g in match.groups())
    if not (
        0 < memory <= MAX_ARGON2_MEMORY_KIB
        and 0 < time_cost <= MAX_ARGON2_TIME_COST
        and 0 < parallelism <= MAX_ARGON2_PARALLELISM
    ):
        raise InvalidHash("hash", "argon2id parameters out of range")
    return LegacyHash("argon2id", value)


def _pbkdf2(record: dict[str, object]) -> LegacyHash:
    scheme = "pbkdf2-sha256"
    iterations = record.get("iterations")
    if iterations is None:
        raise InvalidHash("hash", f"{scheme} password has no iterations")
    # bool is an int in Python; `true` iterations is a broken export, not 1.
    if type(iterations) is not int:
        raise InvalidHash("hash", f"{scheme} iterations is not an integer")
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
        raise InvalidHash("hash", f"{scheme} iterations not in 1..{MAX_PBKDF2_ITERATIONS}")
    salt = _str_field(record, "salt", scheme)
    digest = _str_field(record, "hash", scheme)
    try:
        _b64(salt)
        key = _b64(digest)
    except (binascii.Error, ValueError):
        raise InvalidHash("hash", f"{scheme} salt or hash is not base64") from None
    if not 16 <= len(key) <= 128:
        raise InvalidHash("hash", f"{scheme} hash is not 16-128 bytes")
    return LegacyHash(scheme, digest, salt=salt, iterations=iterations)


def _digest(scheme: str, record: dict[str, object]) -> LegacyHash:
    digest = _str_field(record, "hash", scheme)
    if len(digest) != _DIGEST_HEX_LENGTH[scheme] or not _HEX.fullmatch(digest):
        raise InvalidHash("hash", f"{scheme} hash is not {_DIGEST_HEX_LENGTH[scheme]} hex digits")
    salt = record.get("salt")
    position = record.get("salt_position")
    if salt is not None and not isinstance(salt, str):
        raise InvalidHash("hash", f"{scheme} salt is not a string")
    if position is not None and position not in ("prefix", "suffix"):
        raise InvalidHash("hash", f"{scheme} salt_position is not prefix or suffix")
    if not salt:  # "" is how some exports say "no salt"
        return LegacyHash(scheme, digest)
    if position is None:
        # A guess would lock every such user out if wrong: the export must say.
        raise InvalidHash("hash", f"{scheme} salt without salt_position (prefix or suffix)")
    assert isinstance(position, str)
    return LegacyHash(scheme, digest, salt=salt, salt_position=position)


def check(record: object) -> str:
    """The scheme of a valid record (a decoded JSON object), else InvalidHash saying what
    is wrong. The import's fast path: bcrypt, most of any export, builds nothing."""
    if type(record) is dict and len(record) == 2:
        value = record.get("hash")
        if record.get("scheme") == "bcrypt" and type(value) is str and _BCRYPT.fullmatch(value):
            return "bcrypt"
    return parse(record).scheme


def parse(record: object) -> LegacyHash:
    """The validated record (a decoded JSON object), or InvalidHash saying what is wrong."""
    if not isinstance(record, dict):
        raise InvalidHash("type", "password is not an object")
    scheme = record.get("scheme")
    if scheme is None:
        raise InvalidHash("hash", "password has no scheme")
    if not isinstance(scheme, str):
        raise InvalidHash("hash", "password scheme is not a string")
    allowed = _FIELDS.get(scheme)
    if allowed is None:
        raise InvalidHash("scheme", f"unknown password scheme {scheme[:40]!r}")
    if not record.keys() <= allowed:
        # An unknown field (a pepper, an encoding) could mean we would verify wrongly.
        unexpected = sorted(str(k)[:40] for k in record.keys() - allowed)
        raise InvalidHash(
            "hash", f"{scheme} password has unexpected fields: {', '.join(unexpected)}"
        )
    if scheme == "bcrypt":
        return _bcrypt(record)
    if scheme == "argon2id":
        return _argon2id(record)
    if scheme == "pbkdf2-sha256":
        return _pbkdf2(record)
    return _digest(scheme, record)


def to_record(h: LegacyHash) -> dict[str, object]:
    """The JSON object for `h` (scheme included), as `parse` takes it."""
    return {"scheme": h.scheme} | {
        k: v for k, v in h._asdict().items() if k != "scheme" and v is not None
    }


# --- verification ---------------------------------------------------------------------


def _verify_bcrypt(h: LegacyHash, password: bytes) -> bool:
    return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD_BYTES], h.hash.encode("ascii"))


_ARGON2 = argon2.PasswordHasher()


def _verify_argon2id(h: LegacyHash, password: bytes) -> bool:
    try:
        return _ARGON2.verify(h.hash, password)
    except argon2.exceptions.VerifyMismatchError:
        return False
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _verify_pbkdf2(h: LegacyHash, password: bytes) -> bool:
    assert h.salt is not None and h.iterations is not None
    expected = _b64(h.hash)
    derived = hashlib.pbkdf2_hmac("sha256", password, _b64(h.salt), h.iterations, len(expected))
    return hmac.compare_digest(derived, expected)


def _verify_digest(h: LegacyHash, password: bytes) -> bool:
    salt = (h.salt or "").encode("utf-8")
    message = salt + password if h.salt_position == "prefix" else password + salt
    computed = hashlib.new(h.scheme, message, usedforsecurity=False).digest()
    return hmac.compare_digest(computed, bytes.fromhex(h.hash))


_VERIFIERS: Final[dict[str, Callable[[LegacyHash, bytes], bool]]] = {
    "bcrypt": _verify_bcrypt,
    "argon2id": _verify_argon2id,
    "pbkdf2-sha256": _verify_pbkdf2,
    "md5": _verify_digest,
    "sha1": _verify_digest,
    "sha256": _verify_digest,
}


def verify(h: LegacyHash, password: str) -> bool:
    """True when `password` is the one `h` was made from. Compares in constant time."""
    return _VERIFIERS[h.scheme](h, password.encode("utf-8"))
