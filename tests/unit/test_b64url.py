"""Strict base64url for variable-length fields: one spelling per value, never a crash."""

from __future__ import annotations

import pytest

from storage.crypto import b64url_decode_any, b64url_encode
from storage.errors import FormatError


@pytest.mark.parametrize("data", [b"", b"\x00", b"ab", b"abc", bytes(range(256))])
def test_round_trip(data: bytes) -> None:
    assert b64url_decode_any(b64url_encode(data), "x") == data


@pytest.mark.parametrize(
    "text",
    [
        "A",  # a length no encoding has (binascii would raise its own error)
        "AAAAA",
        "AB",  # non-zero trailing bits: "AA" is the canonical spelling of b"\x00"
        "AA==",  # padding
        "A+/A",  # the standard alphabet, not the URL one
        "AA AA",
        "\u0661\u0662",  # non-ASCII digits
        None,
        12,
    ],
)
def test_refused_with_a_format_error(text: object) -> None:
    with pytest.raises(FormatError):
        b64url_decode_any(text, "x")
