"""Macaroons in the binary V2 format of gopkg.in/macaroon.v2 (the library Aperture uses).

Only first-party caveats are supported; the module is pure (no I/O).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass

from l402.errors import MacaroonError

__all__ = [
    "MAX_CAVEATS",
    "MAX_SIZE",
    "Macaroon",
    "MacaroonError",
    "add_caveat",
    "deserialize",
    "from_base64",
    "mint",
    "serialize_v2",
    "to_base64",
    "verify_signature",
]

MAX_SIZE = 64 * 1024
MAX_CAVEATS = 64
SIGNATURE_LEN = 32

_VERSION_V2 = 2
_FIELD_EOS = 0
_FIELD_LOCATION = 1
_FIELD_IDENTIFIER = 2
_FIELD_VID = 4
_FIELD_SIGNATURE = 6
# go-macaroon rejects varints above this (parseVarint in packet-v2.go).
_MAX_VARINT = 0x7FFFFFFF
# Derivation key shared by libmacaroons and go-macaroon (makeKey in crypto.go).
_KEY_GENERATOR = b"macaroons-key-generator"
# Base64 text of a MAX_SIZE blob plus padding; checked before decoding anything.
_MAX_B64_CHARS = (MAX_SIZE + 2) // 3 * 4
_B64_RE = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


@dataclass(frozen=True)
class Macaroon:
    """An immutable macaroon carrying first-party caveats only."""

    location: str
    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signature) != SIGNATURE_LEN:
            raise MacaroonError("macaroon signature must be 32 bytes")
        if len(self.caveats) > MAX_CAVEATS:
            raise MacaroonError(f"macaroon has more than {MAX_CAVEATS} caveats")


def _hmac(key: bytes, msg: bytes) -> bytes:
    # The one-shot form: no HMAC object per call (a token check makes six of these).
    return hmac.digest(key, msg, "sha256")


def _chain(root_key: bytes, identifier: bytes, caveats: tuple[bytes, ...]) -> bytes:
    sig = _hmac(_hmac(_KEY_GENERATOR, root_key), identifier)
    for caveat in caveats:
        sig = _hmac(sig, caveat)
    return sig


def mint(root_key: bytes, identifier: bytes, location: str = "lsat") -> Macaroon:
    """Create a caveat-free macaroon, as go-macaroon's ``macaroon.New``."""
    return Macaroon(location, bytes(identifier), (), _chain(root_key, identifier, ()))


def add_caveat(m: Macaroon, caveat: bytes) -> Macaroon:
    """Return a copy of ``m`` with one more first-party caveat, re-signed."""
    if len(m.caveats) >= MAX_CAVEATS:
        raise MacaroonError(f"macaroon has more than {MAX_CAVEATS} caveats")
    caveat = bytes(caveat)
    return Macaroon(m.location, m.identifier, (*m.caveats, caveat), _hmac(m.signature, caveat))


def verify_signature(m: Macaroon, root_key: bytes) -> bool:
    """Recompute the HMAC chain from ``root_key`` and compare in constant time."""
    return hmac.compare_digest(_chain(root_key, m.identifier, m.caveats), m.signature)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _packet(field: int, data: bytes) -> bytes:
    return bytes((field,)) + _uvarint(len(data)) + data


def serialize_v2(m: Macaroon) -> bytes:
    """Encode as go-macaroon's ``appendBinaryV2`` does, byte for byte."""
    out = bytearray((_VERSION_V2,))
    if m.location:  # go-macaroon omits an empty location
        try:
            location = m.location.encode("utf-8")
        except UnicodeEncodeError:
            raise MacaroonError("macaroon location is not encodable as UTF-8") from None
        out += _packet(_FIELD_LOCATION, location)
    out += _packet(_FIELD_IDENTIFIER, m.identifier)
    out.append(_FIELD_EOS)
    for caveat in m.caveats:
        out += _packet(_FIELD_IDENTIFIER, caveat)
        out.append(_FIELD_EOS)
    out.append(_FIELD_EOS)
    out += _packet(_FIELD_SIGNATURE, m.signature)
    if len(out) > MAX_SIZE:
        raise MacaroonError(f"macaroon larger than {MAX_SIZE} bytes")
    return bytes(out)


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (go-macaroon's parseVarint rules)."""
    value = shift = 0
    start = pos
    end = len(data)
    while True:
        if pos >= end:
            raise MacaroonError("truncated macaroon (varint past end of data)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 35:
            raise MacaroonError("macaroon varint out of range")
    # Go never writes non-minimal varints; refusing them keeps decode/encode a bijection.
    if pos - start > 1 and data[pos - 1] == 0:
        raise MacaroonError("macaroon varint is not minimally encoded")
    if value > _MAX_VARINT:
        raise MacaroonError("macaroon varint out of range")
    return value, pos


def _section(data: bytes, pos: int) -> tuple[list[tuple[int, bytes]], int]:
    """The packets up to EOS from ``pos``, and the position after it; field types must
    strictly increase (parseSectionV2).

    The hot path of every token check, so it is one loop with the one-byte varints (every
    field of a Bitcache token) read inline; longer ones go through :func:`_read_uvarint`.
    """
    packets: list[tuple[int, bytes]] = []
    prev = -1
    end = len(data)
    while True:
        if pos >= end:
            raise MacaroonError("truncated macaroon (section past end of data)")
        field = data[pos]
        if field < 0x80:
            pos += 1
        else:
            field, pos = _read_uvarint(data, pos)
        if field == _FIELD_EOS:
            return packets, pos
        if pos < end and data[pos] < 0x80:
            length = data[pos]
            pos += 1
        else:
            length, pos = _read_uvarint(data, pos)
        if length > end - pos:
            raise MacaroonError("truncated macaroon (field data past end of data)")
        if field <= prev:
            raise MacaroonError("macaroon fields out of order")
        packets.append((field, data[pos : pos + length]))
        pos += length
        prev = field


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MacaroonError(f"macaroon {what} is not valid UTF-8") from None


def deserialize(data: bytes) -> Macaroon:
    """Decode one binary V2 macaroon; trailing bytes, V1 and JSON are rejected."""
    if len(data) > MAX_SIZE:
        raise MacaroonError(f"macaroon larger than {MAX_SIZE} bytes")
    data = bytes(data)  # slices of a memoryview/bytearray would otherwise leak into fields
    if not data:
        raise MacaroonError("empty macaroon")
    if data[0] != _VERSION_V2:
        if data[:1] == b"{":
            raise MacaroonError("JSON macaroons are not supported; send binary V2")
        raise MacaroonError("unsupported macaroon format; only binary V2 is accepted")
    header, pos = _section(data, 1)
    location = ""
    if header and header[0][0] == _FIELD_LOCATION:
        location = _utf8(header[0][1], "location")
        header = header[1:]
    if len(header) != 1 or header[0][0] != _FIELD_IDENTIFIER:
        raise MacaroonError("invalid macaroon header")
    identifier = header[0][1]

    caveats: list[bytes] = []
    while True:
        section, pos = _section(data, pos)
        if not section:  # the empty section closes the caveat list
            break
        if len(section) == 1 and section[0][0] == _FIELD_IDENTIFIER:  # the usual caveat
            if len(caveats) >= MAX_CAVEATS:
                raise MacaroonError(f"macaroon has more than {MAX_CAVEATS} caveats")
            caveats.append(section[0][1])
            continue
        if any(field == _FIELD_VID for field, _ in section):
            raise MacaroonError("third-party caveats are not supported")
        if section[0][0] == _FIELD_LOCATION:
            raise MacaroonError("location not allowed in first-party caveat")
        if len(section) != 1 or section[0][0] != _FIELD_IDENTIFIER:
            raise MacaroonError("invalid macaroon caveat")
        if len(caveats) >= MAX_CAVEATS:
            raise MacaroonError(f"macaroon has more than {MAX_CAVEATS} caveats")
        caveats.append(section[0][1])

    if pos >= len(data):
        raise MacaroonError("truncated macaroon (missing signature)")
    field, pos = _read_uvarint(data, pos)
    signature = b""
    if field != _FIELD_EOS:
        length, pos = _read_uvarint(data, pos)
        if length > len(data) - pos:
            raise MacaroonError("truncated macaroon (field data past end of data)")
        signature = data[pos : pos + length]
        pos += length
    if field != _FIELD_SIGNATURE:
        raise MacaroonError("expected macaroon signature field")
    if len(signature) != SIGNATURE_LEN:
        raise MacaroonError("macaroon signature must be 32 bytes")
    if pos != len(data):
        raise MacaroonError("unexpected data after macaroon signature")
    return Macaroon(location, identifier, tuple(caveats), signature)


def to_base64(m: Macaroon) -> str:
    """Standard, padded base64 of the V2 binary form (what Aperture sends)."""
    return base64.b64encode(serialize_v2(m)).decode("ascii")


def from_base64(s: str) -> Macaroon:
    """Decode standard or URL-safe base64, padded or not, then :func:`deserialize`."""
    if len(s) > _MAX_B64_CHARS:
        raise MacaroonError(f"macaroon larger than {MAX_SIZE} bytes")
    if not _B64_RE.fullmatch(s):
        raise MacaroonError("macaroon is not valid base64")
    body = s.rstrip("=")
    if len(s) != len(body) and len(s) % 4:
        raise MacaroonError("macaroon base64 has bad padding")
    body = body.replace("-", "+").replace("_", "/")
    try:
        # The alphabet was checked above; strict mode also refuses misplaced padding.
        raw = binascii.a2b_base64(body + "=" * (-len(body) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise MacaroonError("macaroon is not valid base64") from None
    return deserialize(raw)
