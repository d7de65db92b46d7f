"""The fast V2 parser (l402.macaroon.deserialize) against the straightforward one it replaced.

The parser is on every fresh token check, so it was rewritten as one loop with one-byte
varints inline (issue 15). The reader below is the previous implementation, kept as an
oracle: on valid input and on many thousands of mutated ones, both must give the same
macaroon or fail with the same message.
"""

from __future__ import annotations

import os
import random

from l402.macaroon import (
    MAX_CAVEATS,
    MAX_SIZE,
    Macaroon,
    MacaroonError,
    add_caveat,
    deserialize,
    from_base64,
    mint,
    serialize_v2,
    to_base64,
)
from l402.mint import mint_token


class _Reader:
    """The previous parser's reader, unchanged."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def uvarint(self) -> int:
        value = shift = 0
        start = self.pos
        while True:
            if self.pos >= len(self.data):
                raise MacaroonError("truncated macaroon (varint past end of data)")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise MacaroonError("macaroon varint out of range")
        if self.pos - start > 1 and self.data[self.pos - 1] == 0:
            raise MacaroonError("macaroon varint is not minimally encoded")
        if value > 0x7FFFFFFF:
            raise MacaroonError("macaroon varint out of range")
        return value

    def packet(self) -> tuple[int, bytes]:
        field = self.uvarint()
        if field == 0:
            return field, b""
        length = self.uvarint()
        if length > len(self.data) - self.pos:
            raise MacaroonError("truncated macaroon (field data past end of data)")
        data = self.data[self.pos : self.pos + length]
        self.pos += length
        return field, data

    def section(self) -> list[tuple[int, bytes]]:
        packets: list[tuple[int, bytes]] = []
        prev = -1
        while True:
            if self.at_end():
                raise MacaroonError("truncated macaroon (section past end of data)")
            field, data = self.packet()
            if field == 0:
                return packets
            if field <= prev:
                raise MacaroonError("macaroon fields out of order")
            packets.append((field, data))
            prev = field


def _reference(data: bytes) -> Macaroon:
    """The previous deserialize, on the reader above."""
    if len(data) > MAX_SIZE:
        raise MacaroonError(f"macaroon larger than {MAX_SIZE} bytes")
    if not data:
        raise MacaroonError("empty macaroon")
    if data[0] != 2:
        if data[:1] == b"{":
            raise MacaroonError("JSON macaroons are not supported; send binary V2")
        raise MacaroonError("unsupported macaroon format; only binary V2 is accepted")
    reader = _Reader(data)
    reader.pos = 1
    header = reader.section()
    location = ""
    if header and header[0][0] == 1:
        try:
            location = header[0][1].decode("utf-8")
        except UnicodeDecodeError:
            raise MacaroonError("macaroon location is not valid UTF-8") from None
        header = header[1:]
    if len(header) != 1 or header[0][0] != 2:
        raise MacaroonError("invalid macaroon header")
    identifier = header[0][1]
    caveats: list[bytes] = []
    while True:
        section = reader.section()
        if not section:
            break
        if any(field == 4 for field, _ in section):
            raise MacaroonError("third-party caveats are not supported")
        if section[0][0] == 1:
            raise MacaroonError("location not allowed in first-party caveat")
        if len(section) != 1 or section[0][0] != 2:
            raise MacaroonError("invalid macaroon caveat")
        if len(caveats) >= MAX_CAVEATS:
            raise MacaroonError(f"macaroon has more than {MAX_CAVEATS} caveats")
        caveats.append(section[0][1])
    if reader.at_end():
        raise MacaroonError("truncated macaroon (missing signature)")
    field, signature = reader.packet()
    if field != 6:
        raise MacaroonError("expected macaroon signature field")
    if len(signature) != 32:
        raise MacaroonError("macaroon signature must be 32 bytes")
    if not reader.at_end():
        raise MacaroonError("unexpected data after macaroon signature")
    return Macaroon(location, identifier, tuple(caveats), signature)


def _outcome(parse: object, data: bytes) -> tuple[str, object]:
    assert callable(parse)
    try:
        return "ok", parse(data)
    except MacaroonError as exc:
        return "error", str(exc)


def _seeds() -> list[bytes]:
    token = mint_token(os.urandom(32), os.urandom(32), "f" * 26, 0, 9, 1_700_000_000)
    long_fields = add_caveat(mint(b"k", b"i" * 200, "loc" * 50), b"c" * 300)  # 2-byte varints
    return [serialize_v2(token), serialize_v2(long_fields)]


def test_same_result_as_the_previous_parser_on_mutated_input() -> None:
    rng = random.Random(15)
    for seed in _seeds():
        assert deserialize(seed) == _reference(seed)
        for _ in range(6000):
            buf = bytearray(seed)
            roll = rng.random()
            if roll < 0.6:
                for _ in range(rng.randint(1, 4)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif roll < 0.8:
                del buf[rng.randrange(len(buf)) :]
            else:
                at = rng.randrange(len(buf))
                buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
            data = bytes(buf)
            assert _outcome(deserialize, data) == _outcome(_reference, data), data.hex()


def test_base64_front_end_accepts_both_alphabets_as_before() -> None:
    m = deserialize(_seeds()[0])
    text = to_base64(m)
    url = text.rstrip("=").replace("+", "-").replace("/", "_")
    assert from_base64(text) == from_base64(url) == m
