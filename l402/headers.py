"""The two L402 HTTP headers, both directions.

Server side: :func:`format_challenge` writes ``WWW-Authenticate: L402 macaroon="…",
invoice="…"`` (LSAT first, for old Aperture clients) and :func:`parse_authorization` reads
``Authorization: L402 <macaroon>:<preimage hex>``. Client side: :func:`parse_challenge` finds
the L402 challenge among a 402 answer's ``WWW-Authenticate`` values (RFC 9110 §11.6.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from l402.errors import ChallengeError, L402Error, MacaroonError
from l402.macaroon import Macaroon, from_base64

__all__ = [
    "INVOICE_TEXT_RE",
    "MACAROON_TEXT_RE",
    "Challenge",
    "Credential",
    "format_challenge",
    "parse_authorization",
    "parse_challenge",
]

# What may go inside a quoted header parameter or an Authorization value: no quotes,
# spaces, commas or colons, so neither side can be made to break out of its field.
MACAROON_TEXT_RE = re.compile(r"[A-Za-z0-9+/=_\-]+")
INVOICE_TEXT_RE = re.compile(r"[A-Za-z0-9]+")

# One maximal (64 KiB) macaroon in base64 plus scheme and preimage fits comfortably.
_MAX_AUTH_CHARS = 96 * 1024
_MAX_MACAROONS = 4
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_AUTH_RE = re.compile(r"(L402|LSAT) +([^ :]+):([^ ]*) *", re.IGNORECASE)

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_PARAM_RE = re.compile(rf'({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))')
_SCHEME_RE = re.compile(rf"({_TOKEN})(?=\s|,|$)")
_SEPARATORS_RE = re.compile(r"[\s,]*")
_MAX_CHALLENGE_CHARS = 128 * 1024


# --- server side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """Parsed ``Authorization: L402 <macaroons>:<preimage>``."""

    macaroons: tuple[Macaroon, ...]
    preimage: bytes = field(repr=False)  # the payment secret; keep it out of logs


def format_challenge(macaroon_b64: str, invoice: str) -> list[str]:
    """WWW-Authenticate values, LSAT first: old Aperture clients read only the first."""
    # Both values land inside a quoted header parameter; refuse anything that could break out.
    if not MACAROON_TEXT_RE.fullmatch(macaroon_b64):
        raise L402Error("macaroon must be base64 text")
    if not INVOICE_TEXT_RE.fullmatch(invoice):
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


# --- client side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """An L402 challenge: the macaroon to present once the invoice is paid."""

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
        if len(value) > _MAX_CHALLENGE_CHARS:
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
            if MACAROON_TEXT_RE.fullmatch(macaroon) and INVOICE_TEXT_RE.fullmatch(invoice):
                found[name] = Challenge(name, macaroon, invoice)
    challenge = found.get("L402") or found.get("LSAT")
    if challenge is None:
        raise ChallengeError('no L402 challenge (WWW-Authenticate: L402 macaroon="…", invoice="…")')
    return challenge
