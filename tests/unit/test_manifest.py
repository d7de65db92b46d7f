"""Tests for storage.manifest: the encrypted manifest."""

from __future__ import annotations

from typing import Any

import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
from pydantic import ValidationError

from storage.crypto import MIN_CHUNK_SIZE, derive_keys, new_file_key
from storage.errors import ChunkAuthError, FormatError
from storage.manifest import (
    Manifest,
    manifest_associated_data,
    manifest_to_json,
    open_manifest,
    seal_manifest,
)

KEY = bytes(range(32))
FID = bytes(range(100, 116))
KEYS = derive_keys(KEY, FID)
NONCE = bytes(range(24))


def make(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {"name": "report.pdf", "size": 10, "chunk_size": MIN_CHUNK_SIZE}
    return Manifest(**(fields | changes))


def seal_raw(plaintext: bytes) -> bytes:
    """Authentically seal arbitrary bytes, to test what happens after decryption."""
    ad = manifest_associated_data(FID)
    return NONCE + crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, ad, NONCE, KEYS.manifest_key
    )


def test_round_trip() -> None:
    m = make(name="Zürich ✓ 📄.txt", media_type="text/plain", modified=1_700_000_000, size=0)
    assert open_manifest(KEYS, FID, seal_manifest(KEYS, FID, m)) == m


def test_defaults() -> None:
    m = make()
    assert m.media_type == "application/octet-stream"
    assert m.modified is None


def test_canonical_json() -> None:
    m = make(name="é.bin")
    assert (
        manifest_to_json(m)
        == (
            '{"chunk_size":4096,"media_type":"application/octet-stream",'
            '"modified":null,"name":"é.bin","size":10}'
        ).encode()
    )


def test_layout_and_fixed_nonce_is_deterministic() -> None:
    m = make()
    sealed = seal_manifest(KEYS, FID, m, nonce=NONCE)
    assert sealed[:24] == NONCE
    assert len(sealed) == 24 + len(manifest_to_json(m)) + 16
    assert sealed == seal_manifest(KEYS, FID, m, nonce=NONCE)
    assert manifest_associated_data(FID) == b"bitcache/v1/manifest" + FID


def test_random_nonce_by_default() -> None:
    m = make()
    a, b = seal_manifest(KEYS, FID, m), seal_manifest(KEYS, FID, m)
    assert a[:24] != b[:24]
    assert a != b


def test_bad_nonce_length() -> None:
    with pytest.raises(FormatError):
        seal_manifest(KEYS, FID, make(), nonce=bytes(12))


def test_tampering_detected() -> None:
    sealed = seal_manifest(KEYS, FID, make(), nonce=NONCE)
    for pos in (0, 23, 24, len(sealed) // 2, len(sealed) - 1):
        bad = sealed[:pos] + bytes([sealed[pos] ^ 0x80]) + sealed[pos + 1 :]
        with pytest.raises(ChunkAuthError, match="manifest"):
            open_manifest(KEYS, FID, bad)


def test_other_file_or_key_rejected() -> None:
    sealed = seal_manifest(KEYS, FID, make())
    other_fid = bytes(16)
    with pytest.raises(ChunkAuthError):
        open_manifest(derive_keys(KEY, other_fid), other_fid, sealed)
    with pytest.raises(ChunkAuthError):
        open_manifest(KEYS, other_fid, sealed)  # same keys, spliced into another file
    with pytest.raises(ChunkAuthError):
        open_manifest(derive_keys(new_file_key(), FID), FID, sealed)


def test_manifest_key_is_not_chunk_key() -> None:
    ad = manifest_associated_data(FID)
    body = crypto_aead_xchacha20poly1305_ietf_encrypt(
        manifest_to_json(make()), ad, NONCE, KEYS.chunk_key
    )
    with pytest.raises(ChunkAuthError):
        open_manifest(KEYS, FID, NONCE + body)


@pytest.mark.parametrize("length", [0, 24, 39])
def test_too_short(length: int) -> None:
    with pytest.raises(ChunkAuthError, match="shorter"):
        open_manifest(KEYS, FID, bytes(length))


@pytest.mark.parametrize(
    ("plaintext", "message"),
    [
        (b"not json", "manifest is invalid"),
        (b"\xff\xfe", "UTF-8"),
        (b"[]", "manifest is invalid"),
        (b'{"name":"a","size":1}', "chunk_size"),
        (b'{"name":"a","size":"1","chunk_size":4096}', "size"),
        (b'{"name":"a","size":1,"chunk_size":4096,"owner":"x"}', "owner"),
        (b'{"name":"../x","size":1,"chunk_size":4096}', "name"),
    ],
)
def test_authentic_but_malformed_plaintext(plaintext: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        open_manifest(KEYS, FID, seal_raw(plaintext))


@pytest.mark.parametrize(
    "name", ["", "x" * 256, "a/b", "a\\b", "a\x00b", "a\nb", "\x7f", ".", "..", "a\ud800b"]
)
def test_rejects_non_bare_names(name: str) -> None:
    with pytest.raises(ValidationError):
        make(name=name)


@pytest.mark.parametrize("name", ["x" * 255, "..hidden", "a.b.c", "名前.txt", " spaced name "])
def test_accepts_bare_names(name: str) -> None:
    assert make(name=name).name == name


@pytest.mark.parametrize(
    "changes",
    [
        {"size": -1},
        {"size": 2**53},
        {"size": True},
        {"size": "10"},
        {"chunk_size": MIN_CHUNK_SIZE - 1},
        {"chunk_size": 16 * 1024 * 1024 + 1},
        {"media_type": ""},
        {"media_type": "text/html\r\nX-Evil: 1"},
        {"modified": "yesterday"},
        {"modified": 2**53},
        {"media_type": "text/\udfff"},
        {"unexpected": 1},
    ],
)
def test_rejects_bad_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make(**changes)


def test_frozen() -> None:
    m = make()
    with pytest.raises(ValidationError):
        m.name = "other"
