"""The caveats of a Bitcache L402 token: what it grants, and the check that it does.

A caveat is ``condition=value`` (Aperture's first-party caveat). A token for chunks carries
``services=bitcache:0``, ``bitcache_file=<id>``, ``bitcache_chunks=<first>-<last>`` and
``bitcache_valid_until=<unix seconds>``. The server checks them with :func:`check_caveats`;
the client reads what it bought with :func:`token_scope`. Both parse ranges and times here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from l402.errors import L402Error, MacaroonError, TokenRejected
from l402.macaroon import from_base64

__all__ = [
    "COND_CHUNKS",
    "COND_FILE",
    "COND_SERVICES",
    "COND_VALID_UNTIL",
    "SERVICE",
    "AccessRequest",
    "Caveat",
    "TokenScope",
    "build_caveats",
    "check_caveats",
    "chunk_range",
    "parse_caveat",
    "timestamp",
    "token_scope",
]

SERVICE = "bitcache"
COND_SERVICES = "services"
COND_FILE = "bitcache_file"
COND_CHUNKS = "bitcache_chunks"
COND_VALID_UNTIL = "bitcache_valid_until"

# 18 digits stays far below 2**63, Aperture's int64 range; also caps parsing cost.
_UINT_RE = re.compile(r"[0-9]{1,18}")
_RANGE_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,18})")


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


def chunk_range(value: str) -> tuple[int, int]:
    """``"3-9"`` → ``(3, 9)``; TokenRejected unless ``first <= last``, both small integers."""
    match = _RANGE_RE.fullmatch(value)
    if match is None:
        raise TokenRejected("malformed bitcache_chunks caveat")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise TokenRejected("malformed bitcache_chunks caveat")
    return first, last


def timestamp(value: str) -> int:
    """A ``bitcache_valid_until`` value in unix seconds; TokenRejected if malformed."""
    if not _UINT_RE.fullmatch(value):
        raise TokenRejected("malformed bitcache_valid_until caveat")
    return int(value)


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


# --- server side: does the token grant this request? -----------------------------------


@dataclass(frozen=True)
class AccessRequest:
    """What the client is asking for, and the server's clock (unix seconds)."""

    file_id: str
    chunk_index: int
    now: int


def _service_names(value: str) -> set[str]:
    names: set[str] = set()
    for item in value.split(","):
        name, sep, tier = item.partition(":")
        if not name or not sep or not _UINT_RE.fullmatch(tier):
            raise TokenRejected("malformed services caveat")
        names.add(name)
    return names


def check_caveats(caveats: Sequence[Caveat], request: AccessRequest) -> tuple[int, int, int]:
    """Raise :class:`TokenRejected` unless the caveats grant ``request``; return what they
    grant on the requested file: the chunk range and the expiry, ``(first, last, valid_until)``.

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
            first, last = chunk_range(caveat.value)
            if ranges and not (ranges[-1][0] <= first and last <= ranges[-1][1]):
                raise TokenRejected("bitcache_chunks caveat widens an earlier one")
            ranges.append((first, last))
        elif key == COND_VALID_UNTIL:
            deadline = timestamp(caveat.value)
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
    return first, last, deadlines[-1]


# --- client side: what did I buy? -------------------------------------------------------


@dataclass(frozen=True)
class TokenScope:
    """What a Bitcache macaroon grants, read from its caveats."""

    file_id: str | None
    first: int
    last: int
    valid_until: int | None


def token_scope(macaroon_b64: str) -> TokenScope | None:
    """The chunk range (and file, expiry) a macaroon grants; None if it does not say.

    Caveats may only narrow, so the last one of each kind is the one that counts. The
    signature is not checked: only the server can, and the client merely plans with this.
    """
    try:
        macaroon = from_base64(macaroon_b64)
        caveats = [parse_caveat(raw) for raw in macaroon.caveats]
        file_id: str | None = None
        chunks: tuple[int, int] | None = None
        valid_until: int | None = None
        for caveat in caveats:
            if caveat.key == COND_FILE:
                file_id = caveat.value
            elif caveat.key == COND_CHUNKS:
                chunks = chunk_range(caveat.value)
            elif caveat.key == COND_VALID_UNTIL:
                valid_until = timestamp(caveat.value)
    except (MacaroonError, ValueError):
        return None
    if chunks is None:
        return None
    return TokenScope(file_id, chunks[0], chunks[1], valid_until)
