"""Login rules (pure): the per-account login salt, the proof the client sends, its stored
hash, and the dummy record that makes an unknown username cost what a wrong password does.

The client derives `proof = argon2id(password, login_salt, PROOF_OPSLIMIT, PROOF_MEMLIMIT,
32 bytes)` over the *bare* password (docs/api.md "Login"); the vault key (docs/format.md
§14.3) runs argon2id over a keyed BLAKE2b prehash of the password and then HKDF with a purpose
string, so a proof, or its stored hash, opens no vault. The gateway stores only
`proof_hash(proof)`: the proof is already argon2id-stretched, so one SHA-256 keeps a copy of
the database from being replayed as proofs without adding work at every login.

An account with no salt of its own yet (restored from the old service, not logged in since)
gets `derived_salt(secret, tenant, username)`: HMAC of a server secret and the normalised
name. An unknown username gets the same derivation, so the salt endpoint answers alike for
both and stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

import bcrypt

from gateway.identity import legacy_hashes

SALT_BYTES: Final = 16  # libsodium crypto_pwhash_SALTBYTES
PROOF_BYTES: Final = 32
# argon2id cost the client spends per login: libsodium's INTERACTIVE memory, one more pass.
PROOF_OPSLIMIT: Final = 3
PROOF_MEMLIMIT: Final = 64 << 20
KDF: Final = {"name": "argon2id", "opslimit": PROOF_OPSLIMIT, "memlimit": PROOF_MEMLIMIT}

_SALT_LABEL: Final = b"bitcache/v1/login-salt"
_PROOF_LABEL: Final = b"bitcache/v1/login-proof\x00"
_HEX = re.compile(r"[0-9a-f]+")


def salt_key(server_secret: bytes) -> bytes:
    """The key for derived salts: one purpose of the gateway's secret, never the secret."""
    return hmac.new(server_secret, _SALT_LABEL, hashlib.sha256).digest()


def derived_salt(key: bytes, tenant_id: str, username_norm: str) -> bytes:
    """The salt of a name with no salt of its own (restored account or unknown name)."""
    message = tenant_id.encode() + b"\x00" + username_norm.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()[:SALT_BYTES]


def parse_hex(text: str, size: int, what: str) -> bytes:
    """`size` bytes from lowercase or uppercase hex, else ValueError naming `what` only
    (never quoting the value: it may be a proof)."""
    lowered = text.lower()
    if len(lowered) != 2 * size or not _HEX.fullmatch(lowered):
        raise ValueError(f"{what} must be {2 * size} hex digits")
    return bytes.fromhex(lowered)


def proof_hash(proof: bytes) -> bytes:
    return hashlib.sha256(_PROOF_LABEL + proof).digest()


def proof_matches(proof: bytes, stored: bytes | None) -> bool:
    """Constant time; with no stored hash (unknown name, or a restored account not yet
    upgraded) a dummy is compared instead, so the work is alike, and the answer is False."""
    computed = proof_hash(proof)
    same = hmac.compare_digest(computed, stored if stored is not None else _DUMMY_PROOF_HASH)
    return same and stored is not None


_DUMMY_PROOF_HASH: Final = proof_hash(b"\x00" * PROOF_BYTES)
# A bcrypt record at the cost old services used most (10): checking a password against it is
# what an unknown username, or an account with no old hash, costs instead of a real check.
_DUMMY_BCRYPT: Final = legacy_hashes.LegacyHash(
    "bcrypt", bcrypt.hashpw(b"no such account", bcrypt.gensalt(10)).decode("ascii")
)


def check_legacy_password(record: legacy_hashes.LegacyHash | None, password: str) -> bool:
    """True when `record` exists and `password` matches it. Always spends at least one
    bcrypt check at cost 10 (the dummy record when there is no bcrypt record to check), so
    an unknown name, an md5 record and a bcrypt record take about as long to refuse."""
    if record is None:
        legacy_hashes.verify(_DUMMY_BCRYPT, password)
        return False
    ok = legacy_hashes.verify(record, password)
    if record.scheme != "bcrypt":
        legacy_hashes.verify(_DUMMY_BCRYPT, password)
    return ok
