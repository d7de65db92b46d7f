"""Tests for storage.capability: share links."""

from __future__ import annotations

import pytest

from storage.capability import ShareLink
from storage.crypto import encode_file_id, encode_key, new_file_id, new_file_key
from storage.errors import FormatError

KEY = bytes(range(32))
FID = bytes(range(100, 116))
ID_TEXT = encode_file_id(FID)
KEY_TEXT = encode_key(KEY)


def test_to_url_exact_form() -> None:
    link = ShareLink("https://gw.example", FID, KEY)
    assert link.to_url() == f"https://gw.example/f/{ID_TEXT}#{KEY_TEXT}"
    assert link.to_url() == (
        "https://gw.example/f/mrswmz3infvgw3dnnzxxa4lsom#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    )


@pytest.mark.parametrize(
    "gateway",
    [
        "https://gw.example",
        "http://localhost:8080",
        "https://gw.example:8443/bitcache/v1",
        "http://127.0.0.1",
        "http://[::1]:9000",
        "https://gw.example/f",  # a prefix that itself ends in "/f"
    ],
)
def test_round_trip(gateway: str) -> None:
    fid, key = new_file_id(), new_file_key()
    link = ShareLink(gateway, fid, key)
    parsed = ShareLink.parse(link.to_url())
    assert parsed == link
    assert (parsed.gateway, parsed.file_id, parsed.key) == (gateway, fid, key)


def test_parse_strips_surrounding_whitespace() -> None:
    url = f"  https://gw.example/f/{ID_TEXT}#{KEY_TEXT}\n"
    assert ShareLink.parse(url) == ShareLink("https://gw.example", FID, KEY)


def test_repr_hides_key() -> None:
    text = repr(ShareLink("https://gw.example", FID, KEY))
    assert KEY_TEXT not in text
    assert repr(KEY) not in text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"https://gw.example/f/{ID_TEXT}", "no '#<key>' fragment"),
        (f"https://gw.example/f/{ID_TEXT}#", "no '#<key>' fragment"),
        (f"https://gw.example/{ID_TEXT}#{KEY_TEXT}", "no '/f/' path"),
        (f"https://gw.example/f/{ID_TEXT[:-1]}#{KEY_TEXT}", "bad file id"),
        (f"https://gw.example/f/{ID_TEXT.upper()}#{KEY_TEXT}", "bad file id"),
        (f"https://gw.example/f/{ID_TEXT}/#{KEY_TEXT}", "bad file id"),
        (f"https://gw.example/f/{ID_TEXT}?x=1#{KEY_TEXT}", "bad file id"),
        (f"https://gw.example/f/{ID_TEXT}#{KEY_TEXT[:-1]}", "bad key"),
        (f"https://gw.example/f/{ID_TEXT}#{KEY_TEXT}=", "bad key"),
        (f"https://gw.example/f/{ID_TEXT}#{KEY_TEXT}#x", "bad key"),
        (f"ftp://gw.example/f/{ID_TEXT}#{KEY_TEXT}", "bad gateway"),
        (f"gw.example/f/{ID_TEXT}#{KEY_TEXT}", "bad gateway"),
        (f"https:///f/{ID_TEXT}#{KEY_TEXT}", "bad gateway"),
        (f"https://gw.example//f/{ID_TEXT}#{KEY_TEXT}", "bad gateway"),
        (f"https://gw example/f/{ID_TEXT}#{KEY_TEXT}", "bad gateway"),
    ],
)
def test_parse_errors(url: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        ShareLink.parse(url)


def test_bad_key_error_does_not_echo_key() -> None:
    secret = KEY_TEXT[:-1]
    with pytest.raises(FormatError) as info:
        ShareLink.parse(f"https://gw.example/f/{ID_TEXT}#{secret}")
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    "gateway",
    ["https://gw.example/", "gw.example", "https://gw.example?x", "https://gw.example#x", ""],
)
def test_constructor_rejects_bad_gateway(gateway: str) -> None:
    with pytest.raises(FormatError):
        ShareLink(gateway, FID, KEY)


def test_constructor_rejects_bad_lengths() -> None:
    with pytest.raises(FormatError):
        ShareLink("https://gw.example", FID[:-1], KEY)
    with pytest.raises(FormatError):
        ShareLink("https://gw.example", FID, KEY + b"\x00")
