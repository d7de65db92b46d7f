"""Client side of L402: read the gateway's challenge, keep paid tokens, present them.

A challenge is ``WWW-Authenticate: L402 macaroon="<b64>", invoice="<bolt11>"`` (or the older
``LSAT`` scheme). After paying the invoice, the token is presented as
``Authorization: L402 <macaroon>:<preimage hex>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from l402.caveats import COND_CHUNKS, COND_FILE, COND_VALID_UNTIL, parse_caveat
from l402.macaroon import MacaroonError, from_base64

__all__ = [
    "Challenge",
    "ChallengeError",
    "Token",
    "TokenScope",
    "parse_challenge",
    "token_scope",
]

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_PARAM_RE = re.compile(rf'({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))')
_SCHEME_RE = re.compile(rf"({_TOKEN})(?=\s|,|$)")
_SEPARATORS_RE = re.compile(r"[\s,]*")
# What may go back into an Authorization header: no quotes, spaces or colons.
_MACAROON_RE = re.compile(r"[A-Za-z0-9+/=_\-]+")
_INVOICE_RE = re.compile(r"[A-Za-z0-9]+")
_RANGE_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,18})")
_UINT_RE = re.compile(r"[0-9]{1,18}")
_PREIMAGE_HEX_RE = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER_CHARS = 128 * 1024


class ChallengeError(ValueError):
    """No usable L402 challenge in the answer."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "L402" or "LSAT"
    macaroon: str = field(repr=False)
    invoice: str


def _challenges(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split one header value (RFC 9110 §11.6.1: challenges separated by commas)."""
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while True:
        sep = _SEPARATORS_RE.match(value, pos)
        pos = sep.end() if sep else pos
        if pos >= len(value):
            return out
        param = _PARAM_RE.match(value, pos)
        if param is not None:
            if not out:
                raise ChallengeError("auth-param before any scheme")
            quoted, bare = param.group(2), param.group(3)
            text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            out[-1][1][param.group(1).lower()] = text
            pos = param.end()
            continue
        scheme = _SCHEME_RE.match(value, pos)
        if scheme is None:
            raise ChallengeError("malformed WWW-Authenticate header")
        out.append((scheme.group(1), {}))
        pos = scheme.end()


def parse_challenge(values: Iterable[str] | str) -> Challenge:
    """The L402 challenge among the ``WWW-Authenticate`` values (L402 preferred to LSAT)."""
    found: dict[str, Challenge] = {}
    for value in [values] if isinstance(values, str) else values:
        if len(value) > _MAX_HEADER_CHARS:
            continue
        try:
            parsed = _challenges(value)
        except ChallengeError:
            continue  # another scheme's syntax we do not need to understand
        for scheme, params in parsed:
            name = scheme.upper()
            if name not in ("L402", "LSAT") or name in found:
                continue
            macaroon, invoice = params.get("macaroon", ""), params.get("invoice", "")
            if _MACAROON_RE.fullmatch(macaroon) and _INVOICE_RE.fullmatch(invoice):
                found[name] = Challenge(name, macaroon, invoice)
    challenge = found.get("L402") or found.get("LSAT")
    if challenge is None:
        raise ChallengeError('no L402 challenge (WWW-Authenticate: L402 macaroon="…", invoice="…")')
    return challenge


@dataclass(frozen=True)
class TokenScope:
    """What a Bitcache macaroon grants, read from its caveats."""

    file_id: str | None
    first: int
    last: int
    valid_until: int | None


def token_scope(macaroon_b64: str) -> TokenScope | None:
    """The chunk range (and file, expiry) a macaroon grants; None if it does not say.

    Caveats may only narrow, so the last one of each kind is the one that counts.
    """
    try:
        macaroon = from_base64(macaroon_b64)
        caveats = [parse_caveat(raw) for raw in macaroon.caveats]
    except (MacaroonError, ValueError):
        return None
    file_id: str | None = None
    chunks: tuple[int, int] | None = None
    valid_until: int | None = None
    for caveat in caveats:
        if caveat.key == COND_FILE:
            file_id = caveat.value
        elif caveat.key == COND_CHUNKS:
            match = _RANGE_RE.fullmatch(caveat.value)
            if match is None:
                return None
            chunks = (int(match.group(1)), int(match.group(2)))
        elif caveat.key == COND_VALID_UNTIL:
            if not _UINT_RE.fullmatch(caveat.value):
                return None
            valid_until = int(caveat.value)
    if chunks is None or chunks[0] > chunks[1]:
        return None
    return TokenScope(file_id, chunks[0], chunks[1], valid_until)


@dataclass
class Token:
    """A paid credential for chunks ``first..last`` (inclusive) of one file."""

    macaroon: str = field(repr=False)
    preimage: bytes = field(repr=False)
    first: int
    last: int
    valid_until: int | None = None
    # Served at least one chunk: a later refusal then means it expired, not that it was bad.
    used: bool = False

    def covers(self, index: int) -> bool:
        return self.first <= index <= self.last

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def authorization(self) -> str:
        return f"L402 {self.macaroon}:{self.preimage.hex()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "macaroon": self.macaroon,
            "preimage": self.preimage.hex(),
            "first": self.first,
            "last": self.last,
            "valid_until": self.valid_until,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        """Inverse of :meth:`to_json`; ValueError if anything is off."""
        macaroon, preimage = data.get("macaroon"), data.get("preimage")
        first, last, until = data.get("first"), data.get("last"), data.get("valid_until")
        if not isinstance(macaroon, str) or not _MACAROON_RE.fullmatch(macaroon):
            raise ValueError("bad macaroon")
        if not isinstance(preimage, str) or not _PREIMAGE_HEX_RE.fullmatch(preimage):
            raise ValueError("bad preimage")
        for value in (first, last):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("bad chunk range")
        assert isinstance(first, int) and isinstance(last, int)
        if first > last:
            raise ValueError("bad chunk range")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int)):
            raise ValueError("bad valid_until")
        # Loaded tokens may have served chunks before: treat a refusal as expiry.
        return cls(macaroon, bytes.fromhex(preimage), first, last, until, used=True)
