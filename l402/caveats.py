"""L402 (formerly LSAT) token rules, compatible with Lightning Labs' Aperture.

Pure logic: identifiers, caveats, challenge/authorization headers and the
chunk-access checks for the "bitcache" service. Root-key lookup is the caller's job.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from l402.macaroon import Macaroon, MacaroonError, from_base64, verify_signature

__all__ = [
    "SERVICE",
    "AccessRequest",
    "Caveat",
    "Credential",
    "L402Error",
    "TokenId",
    "TokenRejected",
    "build_caveats",
    "check_caveats",
    "format_challenge",
    "identifier_of",
    "parse_authorization",
    "parse_caveat",
    "verify_credential",
]

SERVICE = "bitcache"
COND_SERVICES = "services"
COND_FILE = "bitcache_file"
COND_CHUNKS = "bitcache_chunks"
COND_VALID_UNTIL = "bitcache_valid_until"
_KNOWN_BITCACHE = frozenset({COND_FILE, COND_CHUNKS, COND_VALID_UNTIL})

TOKEN_ID_VERSION = 0
HASH_LEN = 32
TOKEN_ID_LEN = 32
_ENCODED_ID_LEN = 2 + HASH_LEN + TOKEN_ID_LEN

# One maximal (64 KiB) macaroon in base64 plus scheme and preimage fits comfortably.
_MAX_AUTH_CHARS = 96 * 1024
_MAX_MACAROONS = 4
# 18 digits stays far below 2**63, Aperture's int64 range; also caps parsing cost.
_UINT_RE = re.compile(r"[0-9]{1,18}")
_RANGE_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,18})")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_AUTH_RE = re.compile(r"(L402|LSAT) +([^ :]+):([^ ]*) *", re.IGNORECASE)
_CHALLENGE_MACAROON_RE = re.compile(r"[A-Za-z0-9+/=_\-]+")
_CHALLENGE_INVOICE_RE = re.compile(r"[A-Za-z0-9]+")


class L402Error(ValueError):
    """Bad L402 input; the message is safe to show to a client."""


class TokenRejected(L402Error):
    """A well-formed token that does not grant the requested access."""

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class TokenId:
    """Aperture's macaroon identifier: version, payment hash, random token id."""

    version: int
    payment_hash: bytes
    token_id: bytes

    def encode(self) -> bytes:
        if self.version != TOKEN_ID_VERSION:
            raise L402Error(f"unknown token identifier version {self.version}")
        if len(self.payment_hash) != HASH_LEN or len(self.token_id) != TOKEN_ID_LEN:
            raise L402Error("payment hash and token id must be 32 bytes each")
        return self.version.to_bytes(2, "big") + self.payment_hash + self.token_id

    @classmethod
    def decode(cls, b: bytes) -> TokenId:
        if len(b) < 2:
            raise L402Error("token identifier too short")
        version = int.from_bytes(b[:2], "big")
        if version != TOKEN_ID_VERSION:
            raise L402Error(f"unknown token identifier version {version}")
        if len(b) != _ENCODED_ID_LEN:
            raise L402Error("token identifier has wrong length")
        return cls(version, bytes(b[2 : 2 + HASH_LEN]), bytes(b[2 + HASH_LEN :]))


@dataclass(frozen=True)
class Caveat:
    """A first-party caveat ``key=value`` (Aperture's ``condition=value``)."""

    key: str
    value: str

    def encode(self) -> bytes:
        return f"{self.key}={self.value}".encode()


def parse_caveat(raw: bytes) -> Caveat:
    """Split a caveat at its first ``=``, as Aperture's ``DecodeCaveat``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise L402Error("caveat is not valid UTF-8") from None
    key, sep, value = text.partition("=")
    if not sep:
        raise L402Error('caveat must be of the form "condition=value"')
    return Caveat(key, value)


@dataclass(frozen=True)
class Credential:
    """Parsed ``Authorization: L402 <macaroons>:<preimage>``."""

    macaroons: tuple[Macaroon, ...]
    preimage: bytes = field(repr=False)  # the payment secret; keep it out of logs


@dataclass(frozen=True)
class AccessRequest:
    """What the client is asking for, and the server's clock (unix seconds)."""

    file_id: str
    chunk_index: int
    now: int


def format_challenge(macaroon_b64: str, invoice: str) -> list[str]:
    """WWW-Authenticate values, LSAT first: old Aperture clients read only the first."""
    # Both values land inside a quoted header parameter; refuse anything that could break out.
    if not _CHALLENGE_MACAROON_RE.fullmatch(macaroon_b64):
        raise L402Error("macaroon must be base64 text")
    if not _CHALLENGE_INVOICE_RE.fullmatch(invoice):
        raise L402Error("invoice must be a bech32 payment request")
    params = f'macaroon="{macaroon_b64}", invoice="{invoice}"'
    return [f"LSAT {params}", f"L402 {params}"]


def _parse_one(value: str) -> Credential:
    match = _AUTH_RE.fullmatch(value.strip())
    if match is None:
        raise L402Error("malformed L402 credentials; expected <macaroon>:<preimage>")
    macs_text, preimage_hex = match.group(2), match.group(3)
    # Checked by shape before decoding, and never echoed: the preimage is the payment secret.
    if not _HEX64_RE.fullmatch(preimage_hex):
        raise L402Error("preimage must be 64 hex characters")
    parts = macs_text.split(",")
    if len(parts) > _MAX_MACAROONS:
        raise L402Error("too many macaroons in credentials")
    try:
        macaroons = tuple(from_base64(part) for part in parts)
    except MacaroonError as exc:
        raise L402Error(f"invalid macaroon: {exc}") from None
    return Credential(macaroons, bytes.fromhex(preimage_hex))


def parse_authorization(values: list[str]) -> Credential:
    """Return the first L402/LSAT credential in the Authorization header values.

    Values with other schemes (Basic, Bearer, ...) are skipped; if every L402/LSAT
    value is malformed the first one's error is raised.
    """
    first_error: L402Error | None = None
    for value in values:
        scheme = value.strip().split(" ", 1)[0].upper()
        if scheme not in ("L402", "LSAT"):
            continue
        if len(value) > _MAX_AUTH_CHARS:
            first_error = first_error or L402Error("L402 credentials too large")
            continue
        try:
            return _parse_one(value)
        except L402Error as exc:
            first_error = first_error or exc
    raise first_error or L402Error("no L402 credentials in Authorization header")


def build_caveats(file_id: str, first: int, last: int, valid_until: int) -> list[Caveat]:
    """Caveats granting chunks ``first..last`` (inclusive) of ``file_id`` until ``valid_until``."""
    if not file_id:
        raise ValueError("file_id must not be empty")
    if not 0 <= first <= last:
        raise ValueError("chunk range must satisfy 0 <= first <= last")
    if valid_until < 0:
        raise ValueError("valid_until must not be negative")
    return [
        Caveat(COND_SERVICES, f"{SERVICE}:0"),
        Caveat(COND_FILE, file_id),
        Caveat(COND_CHUNKS, f"{first}-{last}"),
        Caveat(COND_VALID_UNTIL, str(valid_until)),
    ]


def _service_names(value: str) -> set[str]:
    names: set[str] = set()
    for item in value.split(","):
        name, sep, tier = item.partition(":")
        if not name or not sep or not _UINT_RE.fullmatch(tier):
            raise TokenRejected("malformed services caveat")
        names.add(name)
    return names


def _chunk_range(value: str) -> tuple[int, int]:
    match = _RANGE_RE.fullmatch(value)
    if match is None:
        raise TokenRejected("malformed bitcache_chunks caveat")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise TokenRejected("malformed bitcache_chunks caveat")
    return first, last


def _timestamp(value: str) -> int:
    if not _UINT_RE.fullmatch(value):
        raise TokenRejected("malformed bitcache_valid_until caveat")
    return int(value)


def check_caveats(caveats: Sequence[Caveat], request: AccessRequest) -> None:
    """Raise :class:`TokenRejected` unless the caveats grant ``request``.

    As in Aperture, a repeated condition may only narrow what came before it; unlike
    Aperture, unknown ``bitcache_*`` conditions fail closed.
    """
    services: list[set[str]] = []
    ranges: list[tuple[int, int]] = []
    deadlines: list[int] = []
    seen_file = False

    for caveat in caveats:
        key = caveat.key
        if key == COND_SERVICES:
            names = _service_names(caveat.value)
            if services and not names <= services[-1]:
                raise TokenRejected("services caveat widens an earlier one")
            services.append(names)
        elif key == COND_FILE:
            if caveat.value != request.file_id:
                raise TokenRejected("token is not valid for this file")
            seen_file = True
        elif key == COND_CHUNKS:
            first, last = _chunk_range(caveat.value)
            if ranges and not (ranges[-1][0] <= first and last <= ranges[-1][1]):
                raise TokenRejected("bitcache_chunks caveat widens an earlier one")
            ranges.append((first, last))
        elif key == COND_VALID_UNTIL:
            deadline = _timestamp(caveat.value)
            if deadlines and deadline > deadlines[-1]:
                raise TokenRejected("bitcache_valid_until caveat extends an earlier one")
            deadlines.append(deadline)
        elif key.lower().startswith(SERVICE + "_"):
            # Case-folded so a near-miss spelling of our own condition cannot be skipped.
            raise TokenRejected("unknown bitcache caveat")
        # Conditions of other services are ignored, as Aperture does.

    if not services or SERVICE not in services[-1]:
        raise TokenRejected("token is not valid for the bitcache service")
    if not seen_file or not ranges or not deadlines:
        raise TokenRejected("token lacks file, chunk or expiry restrictions")
    # The last caveat of each kind is the narrowest, so checking it covers the rest.
    first, last = ranges[-1]
    if not first <= request.chunk_index <= last:
        raise TokenRejected("token is not valid for this chunk")
    if deadlines[-1] <= request.now:
        raise TokenRejected("token has expired")


def _single_macaroon(credential: Credential) -> Macaroon:
    if len(credential.macaroons) != 1:
        raise TokenRejected("exactly one macaroon is required")
    return credential.macaroons[0]


def identifier_of(credential: Credential) -> bytes:
    """The macaroon identifier, so the caller can look up or derive the root key."""
    return _single_macaroon(credential).identifier


def verify_credential(credential: Credential, root_key: bytes, request: AccessRequest) -> TokenId:
    """Check payment, signature and caveats; return the token's identifier."""
    mac = _single_macaroon(credential)
    try:
        token = TokenId.decode(mac.identifier)
    except L402Error as exc:
        raise TokenRejected(str(exc)) from None
    paid = hashlib.sha256(credential.preimage).digest()
    if not hmac.compare_digest(paid, token.payment_hash):
        raise TokenRejected("preimage does not match the token's payment hash")
    if not verify_signature(mac, root_key):
        raise TokenRejected("invalid macaroon signature")
    try:
        caveats = [parse_caveat(raw) for raw in mac.caveats]
    except L402Error as exc:
        raise TokenRejected(str(exc)) from None
    check_caveats(caveats, request)
    return token
