"""Tests for storage.crypto: keys, encodings, header and chunk sealing."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import blake3
import pytest
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from storage import aead
from storage.crypto import (
    CHUNK_OVERHEAD,
    FILE_ID_BYTES,
    FORMAT_VERSION,
    KEY_BYTES,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    READABLE_VERSIONS,
    FileDecryptor,
    FileEncryptor,
    FileHeader,
    check_key,
    chunk_associated_data,
    chunk_count,
    decode_file_id,
    decode_key,
    derive_keys,
    encode_file_id,
    encode_key,
    hkdf_sha256,
    new_file_id,
    new_file_key,
    open_chunk,
    plaintext_chunk_size,
    seal_chunk,
    sealed_chunk_size,
    synthetic_nonce,
)
from storage.errors import ChunkAuthError, FormatError, StorageError, WrongKeyError

CS = MIN_CHUNK_SIZE
KEY = bytes(range(32))
FID = bytes(range(100, 116))


def data(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def seal_file(
    key: bytes, file_id: bytes, plaintext: bytes, version: int = FORMAT_VERSION
) -> tuple[FileHeader, list[bytes]]:
    enc = FileEncryptor(key, file_id, len(plaintext), CS, version)
    chunks = [enc.seal(i, plaintext[i * CS : (i + 1) * CS]) for i in range(enc.chunk_count)]
    return enc.header, chunks


def flip(buf: bytes, pos: int) -> bytes:
    return buf[:pos] + bytes([buf[pos] ^ 0x01]) + buf[pos + 1 :]


# --- HKDF -------------------------------------------------------------------------------------


def test_hkdf_rfc5869_case_1() -> None:
    okm = hkdf_sha256(bytes([0x0B] * 22), bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_case_3_empty_salt_and_info() -> None:
    okm = hkdf_sha256(bytes([0x0B] * 22), b"", b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_hkdf_rejects_bad_length() -> None:
    with pytest.raises(ValueError):
        hkdf_sha256(b"k", b"s", b"i", 0)
    with pytest.raises(ValueError):
        hkdf_sha256(b"k", b"s", b"i", 255 * 32 + 1)


# --- encodings --------------------------------------------------------------------------------


def test_random_key_and_id_lengths_and_uniqueness() -> None:
    assert len(new_file_key()) == KEY_BYTES
    assert len(new_file_id()) == FILE_ID_BYTES
    assert new_file_key() != new_file_key()
    assert new_file_id() != new_file_id()


def test_file_id_text_round_trip() -> None:
    for fid in (bytes(16), b"\xff" * 16, FID, new_file_id()):
        text = encode_file_id(fid)
        assert len(text) == 26
        assert text == text.lower()
        assert "=" not in text
        assert decode_file_id(text) == fid
    assert encode_file_id(FID) == base64.b32encode(FID).decode().rstrip("=").lower()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a" * 25,
        "a" * 27,
        "A" * 26,  # uppercase is not canonical
        "a" * 24 + "==",
        "a" * 25 + "1",  # outside the base32 alphabet
        "a" * 25 + "b",  # non-zero trailing bits
        " " + "a" * 25,
    ],
)
def test_decode_file_id_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        decode_file_id(text)


def test_key_text_round_trip() -> None:
    for key in (bytes(32), b"\xff" * 32, KEY, new_file_key()):
        text = encode_key(key)
        assert len(text) == 43
        assert "=" not in text and "+" not in text and "/" not in text
        assert decode_key(text) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "+",  # standard, not url-safe, alphabet
        "A" * 42 + "B",  # non-zero trailing bits
    ],
)
def test_decode_key_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        decode_key(text)


def test_encode_rejects_wrong_lengths() -> None:
    with pytest.raises(FormatError):
        encode_file_id(bytes(15))
    with pytest.raises(FormatError):
        encode_key(bytes(31))


def test_format_error_is_storage_and_value_error() -> None:
    assert issubclass(FormatError, StorageError)
    assert issubclass(FormatError, ValueError)
    assert issubclass(WrongKeyError, StorageError)
    assert issubclass(ChunkAuthError, StorageError)


# --- keys -------------------------------------------------------------------------------------


def test_derive_keys_deterministic_distinct_and_bound_to_file_id() -> None:
    keys = derive_keys(KEY, FID)
    assert keys == derive_keys(KEY, FID)
    parts = [keys.chunk_key, keys.nonce_key, keys.manifest_key, keys.commitment]
    assert all(len(p) == 32 for p in parts)
    assert len(set(parts)) == 4
    other = derive_keys(KEY, bytes(16))
    assert other.chunk_key != keys.chunk_key
    assert other.commitment != keys.commitment
    assert keys.chunk_key == hkdf_sha256(KEY, FID, b"bitcache/v1/chunk-key")


def test_derive_keys_repr_hides_secrets() -> None:
    keys = derive_keys(KEY, FID)
    assert keys.chunk_key.hex() not in repr(keys)
    assert repr(keys.chunk_key) not in repr(keys)


def test_derive_keys_rejects_bad_lengths() -> None:
    with pytest.raises(FormatError):
        derive_keys(bytes(31), FID)
    with pytest.raises(FormatError):
        derive_keys(KEY, bytes(17))


def test_check_key() -> None:
    keys = derive_keys(KEY, FID)
    check_key(keys, keys.commitment)
    with pytest.raises(WrongKeyError):
        check_key(derive_keys(new_file_key(), FID), keys.commitment)
    with pytest.raises(WrongKeyError):
        check_key(keys, keys.commitment[:-1])


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "count"),
    [(0, 1), (1, 1), (CS - 1, 1), (CS, 1), (CS + 1, 2), (2 * CS, 2), (5 * CS // 2, 3)],
)
def test_chunk_count(size: int, count: int) -> None:
    assert chunk_count(size, CS) == count


def test_chunk_sizes() -> None:
    size = 2 * CS + 7
    assert [plaintext_chunk_size(i, size, CS) for i in range(3)] == [CS, CS, 7]
    assert [sealed_chunk_size(i, size, CS) for i in range(3)] == [CS + 40, CS + 40, 47]
    assert plaintext_chunk_size(0, 0, CS) == 0
    assert plaintext_chunk_size(0, CS, CS) == CS
    for bad_index in (-1, 3, True):
        with pytest.raises(FormatError):
            plaintext_chunk_size(bad_index, size, CS)


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 0])
def test_chunk_size_limits(chunk_size: int) -> None:
    with pytest.raises(FormatError):
        chunk_count(10, chunk_size)
    with pytest.raises(FormatError):
        FileEncryptor(KEY, FID, 10, chunk_size)


def test_chunk_size_bounds_accepted() -> None:
    assert chunk_count(MAX_CHUNK_SIZE, MAX_CHUNK_SIZE) == 1
    assert chunk_count(MIN_CHUNK_SIZE + 1, MIN_CHUNK_SIZE) == 2
    assert chunk_count(10, 5000) == 1  # any size in range, not only powers of two


def test_negative_plaintext_size_rejected() -> None:
    with pytest.raises(FormatError):
        chunk_count(-1, CS)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS + 5])
def test_round_trip(size: int) -> None:
    plaintext = data(size)
    header, chunks = seal_file(KEY, FID, plaintext)
    assert len(chunks) == chunk_count(size, CS)
    assert sum(len(c) for c in chunks) == size + CHUNK_OVERHEAD * len(chunks)
    dec = FileDecryptor(KEY, header)
    assert b"".join(dec.open(i, c) for i, c in enumerate(chunks)) == plaintext


def test_empty_file_is_one_empty_last_chunk() -> None:
    header, chunks = seal_file(KEY, FID, b"")
    assert header.chunk_count == 1
    assert len(chunks[0]) == CHUNK_OVERHEAD
    keys = derive_keys(KEY, FID)
    assert open_chunk(keys, FID, 0, True, chunks[0]) == b""
    with pytest.raises(ChunkAuthError):
        open_chunk(keys, FID, 0, False, chunks[0])


def test_seal_chunk_layout_matches_spec_v1() -> None:
    keys = derive_keys(KEY, FID, version=1)
    assert keys.nonce_key == hkdf_sha256(KEY, FID, b"bitcache/v1/nonce-key")
    plaintext = data(100)
    sealed = seal_chunk(keys, FID, 2, False, plaintext)
    ad = b"bitcache/v1/chunk" + FID + (2).to_bytes(8, "big") + b"\x00"
    assert chunk_associated_data(FID, 2, False) == ad
    assert chunk_associated_data(FID, 2, True) == ad[:-1] + b"\x01"
    nonce = hashlib.blake2b(ad + plaintext, digest_size=24, key=keys.nonce_key).digest()
    body = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, keys.chunk_key)
    assert sealed == nonce + body
    assert len(sealed) == len(plaintext) + 40


def test_seal_chunk_layout_matches_spec_v2() -> None:
    keys = derive_keys(KEY, FID, version=2)
    assert keys.nonce_key == hkdf_sha256(KEY, FID, b"bitcache/v2/nonce-key")
    assert keys.chunk_key == derive_keys(KEY, FID, version=1).chunk_key
    plaintext = data(CS + 7)
    sealed = seal_chunk(keys, FID, 2, True, plaintext)
    ad = b"bitcache/v1/chunk" + FID + (2).to_bytes(8, "big") + b"\x01"  # same AD as v1
    nonce = blake3.blake3(ad + plaintext, key=keys.nonce_key).digest(length=24)
    body = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, keys.chunk_key)
    assert sealed == nonce + body
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(body, ad, nonce, keys.chunk_key) == (
        plaintext
    )


def test_writers_default_to_v2_and_readers_accept_v1_and_v2() -> None:
    assert FORMAT_VERSION == 2
    assert READABLE_VERSIONS == (1, 2)
    assert derive_keys(KEY, FID).version == 2
    assert FileEncryptor(KEY, FID, 10, CS).header.version == 2


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", [0, 1, 2, CS + 1, 3 * CS])
def test_every_version_round_trips(version: int, size: int) -> None:
    plaintext = data(size, seed=version)
    header, chunks = seal_file(KEY, FID, plaintext, version)
    assert header.version == version
    parsed = FileHeader.from_json_dict(json.loads(json.dumps(header.to_json_dict())))
    dec = FileDecryptor(KEY, parsed)
    assert dec.keys.version == version
    assert b"".join(dec.open(i, c) for i, c in enumerate(chunks)) == plaintext


def test_v1_and_v2_nonces_differ_ciphertexts_both_open() -> None:
    plaintext = data(CS)
    v1 = derive_keys(KEY, FID, version=1)
    v2 = derive_keys(KEY, FID, version=2)
    assert v1.nonce_key != v2.nonce_key  # one key is never used with two hashes
    a, b = seal_chunk(v1, FID, 0, True, plaintext), seal_chunk(v2, FID, 0, True, plaintext)
    assert a[:24] != b[:24]
    # Opening does not depend on the version: either set of keys opens either chunk.
    for keys in (v1, v2):
        assert open_chunk(keys, FID, 0, True, a) == open_chunk(keys, FID, 0, True, b) == plaintext


def test_derive_keys_rejects_unknown_versions() -> None:
    for bad in (0, 3, True, "2"):
        with pytest.raises(FormatError, match="version"):
            derive_keys(KEY, FID, bad)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="unsupported format version 3"):
        FileEncryptor(KEY, FID, 10, CS, version=3)


def test_seal_and_open_take_any_buffer_without_changing_bytes() -> None:
    keys = derive_keys(KEY, FID)
    plaintext = data(CS + 3)
    sealed = seal_chunk(keys, FID, 1, True, plaintext)
    assert type(sealed) is bytes
    assert seal_chunk(keys, FID, 1, True, memoryview(plaintext)) == sealed
    assert seal_chunk(keys, FID, 1, True, bytearray(plaintext)) == sealed
    # A chunk inside a larger received buffer opens in place.
    buffer = b"junk" + sealed + b"more"
    view = memoryview(buffer)[4 : 4 + len(sealed)]
    opened = open_chunk(keys, FID, 1, True, view)
    assert type(opened) is bytes
    assert opened == plaintext
    assert synthetic_nonce(keys, chunk_associated_data(FID, 1, True), plaintext) == sealed[:24]


# --- wrong key --------------------------------------------------------------------------------


def test_wrong_key_rejected_before_any_chunk_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    header, _ = seal_file(KEY, FID, data(CS + 1))
    calls: list[Any] = []
    monkeypatch.setattr(aead, "open", lambda *a: calls.append(a))
    with pytest.raises(WrongKeyError):
        FileDecryptor(new_file_key(), header)
    assert calls == []


# --- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_every_flipped_byte_is_detected(version: int) -> None:
    plaintext = data(64)
    header, chunks = seal_file(KEY, FID, plaintext, version)
    dec = FileDecryptor(KEY, header)
    sealed = chunks[0]
    for pos in range(len(sealed)):  # nonce, ciphertext and tag
        with pytest.raises(ChunkAuthError, match="chunk 0"):
            dec.open(0, flip(sealed, pos))


@pytest.mark.parametrize("version", [1, 2])
def test_flipped_byte_in_full_chunk_detected(version: int) -> None:
    header, chunks = seal_file(KEY, FID, data(2 * CS), version)
    dec = FileDecryptor(KEY, header)
    for pos in (0, 23, 24, CS // 2, len(chunks[0]) - 17, len(chunks[0]) - 1):
        with pytest.raises(ChunkAuthError):
            dec.open(0, flip(chunks[0], pos))


def test_chunk_at_another_index_fails() -> None:
    header, chunks = seal_file(KEY, FID, data(3 * CS))
    dec = FileDecryptor(KEY, header)
    with pytest.raises(ChunkAuthError, match="chunk 1"):
        dec.open(1, chunks[0])
    keys = derive_keys(KEY, FID)
    with pytest.raises(ChunkAuthError):
        open_chunk(keys, FID, 5, False, chunks[0])


def test_swapped_chunks_fail() -> None:
    header, chunks = seal_file(KEY, FID, data(2 * CS + 10))
    dec = FileDecryptor(KEY, header)
    with pytest.raises(ChunkAuthError):
        dec.open(0, chunks[1])
    with pytest.raises(ChunkAuthError):
        dec.open(1, chunks[0])


def test_chunk_from_another_file_with_same_key_fails() -> None:
    plaintext = data(2 * CS)
    header, _ = seal_file(KEY, FID, plaintext)
    _, foreign = seal_file(KEY, new_file_id(), plaintext)
    dec = FileDecryptor(KEY, header)
    with pytest.raises(ChunkAuthError):
        dec.open(0, foreign[0])


def test_truncation_second_to_last_opened_as_last_fails() -> None:
    plaintext = data(3 * CS)
    header, chunks = seal_file(KEY, FID, plaintext)
    keys = derive_keys(KEY, FID)
    with pytest.raises(ChunkAuthError, match="chunk 1 \\(last\\)"):
        open_chunk(keys, FID, 1, True, chunks[1])
    # A server lying in the (unauthenticated) header to drop the last chunk is caught too.
    lying = FileHeader(1, FID, CS, 2 * CS, header.commitment)
    dec = FileDecryptor(KEY, lying)
    assert dec.open(0, chunks[0]) == plaintext[:CS]
    with pytest.raises(ChunkAuthError):
        dec.open(1, chunks[1])


def test_last_chunk_opened_as_not_last_fails() -> None:
    _, chunks = seal_file(KEY, FID, data(CS + 3))
    with pytest.raises(ChunkAuthError):
        open_chunk(derive_keys(KEY, FID), FID, 1, False, chunks[1])


def test_too_short_sealed_chunk() -> None:
    keys = derive_keys(KEY, FID)
    for length in (0, 1, 39):
        with pytest.raises(ChunkAuthError, match="chunk 4"):
            open_chunk(keys, FID, 4, False, bytes(length))


def test_decryptor_checks_sealed_length() -> None:
    header, chunks = seal_file(KEY, FID, data(CS + 5))
    dec = FileDecryptor(KEY, header)
    with pytest.raises(ChunkAuthError, match="expected 45"):
        dec.open(1, chunks[1] + b"\x00")
    with pytest.raises(ChunkAuthError):
        dec.open(1, chunks[1][:-1])
    with pytest.raises(FormatError):
        dec.open(2, chunks[1])


def test_non_synthetic_nonce_is_not_checked_by_readers() -> None:
    """Format §6.4: only a holder of the file key can make a chunk whose tag verifies, and
    such a holder can also compute the synthetic nonce, so readers no longer re-hash."""
    keys = derive_keys(KEY, FID)
    ad = chunk_associated_data(FID, 0, True)
    nonce = bytes(24)
    other = nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(b"hi", ad, nonce, keys.chunk_key)
    assert open_chunk(keys, FID, 0, True, other) == b"hi"
    assert synthetic_nonce(keys, ad, b"hi") != nonce  # a conformance check can still tell
    # Without chunk_key the nonce cannot be chosen: any other key fails the tag.
    stranger = derive_keys(new_file_key(), FID)
    bad = nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(b"hi", ad, nonce, stranger.chunk_key)
    with pytest.raises(ChunkAuthError):
        open_chunk(keys, FID, 0, True, bad)


def test_encryptor_checks_plaintext_length() -> None:
    enc = FileEncryptor(KEY, FID, CS + 5, CS)
    with pytest.raises(FormatError):
        enc.seal(0, bytes(CS - 1))
    with pytest.raises(FormatError):
        enc.seal(1, bytes(6))
    with pytest.raises(FormatError):
        enc.seal(2, b"")


# --- determinism ------------------------------------------------------------------------------


def test_resealing_is_byte_identical() -> None:
    plaintext = data(2 * CS + 1)
    assert seal_file(KEY, FID, plaintext) == seal_file(KEY, FID, plaintext)


def test_nonce_depends_on_plaintext_index_and_last_flag() -> None:
    keys = derive_keys(KEY, FID)
    a = seal_chunk(keys, FID, 0, False, b"a" * 10)
    b = seal_chunk(keys, FID, 0, False, b"b" + b"a" * 9)
    c = seal_chunk(keys, FID, 1, False, b"a" * 10)
    d = seal_chunk(keys, FID, 0, True, b"a" * 10)
    nonces = {x[:24] for x in (a, b, c, d)}
    assert len(nonces) == 4


# --- header -----------------------------------------------------------------------------------


def test_header_json_round_trip() -> None:
    header = FileEncryptor(KEY, FID, 5 * CS // 2, CS).header
    doc = header.to_json_dict()
    assert doc == {
        "version": 2,
        "file_id": encode_file_id(FID),
        "chunk_size": CS,
        "plaintext_size": 5 * CS // 2,
        "commitment": base64.urlsafe_b64encode(header.commitment).decode().rstrip("="),
    }
    assert FileHeader.from_json_dict(json.loads(json.dumps(doc))) == header
    assert header.chunk_count == 3


def _good_header() -> dict[str, Any]:
    return FileEncryptor(KEY, FID, 100, CS).header.to_json_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 3}, "unsupported format version 3; this reader supports 1 and 2"),
        ({"version": 0}, "unsupported format version 0"),
        ({"version": True}, "version must be an integer"),
        ({"version": "1"}, "version must be an integer"),
        ({"file_id": "not-an-id"}, "file id"),
        ({"file_id": 7}, "file id"),
        ({"commitment": "AAAA"}, "key commitment"),
        ({"chunk_size": MIN_CHUNK_SIZE - 1}, "chunk_size"),
        ({"chunk_size": MAX_CHUNK_SIZE + 1}, "chunk_size"),
        ({"chunk_size": 4096.0}, "chunk_size must be an integer"),
        ({"plaintext_size": -1}, "plaintext_size"),
        ({"plaintext_size": 2**53}, "plaintext_size"),
        ({"plaintext_size": "100"}, "plaintext_size must be an integer"),
        ({"plaintext_size": False}, "plaintext_size must be an integer"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_header_from_json_rejects(change: dict[str, Any], message: str) -> None:
    doc = _good_header() | change
    with pytest.raises(FormatError, match=message):
        FileHeader.from_json_dict(doc)


def test_header_missing_field_and_non_object() -> None:
    doc = _good_header()
    del doc["commitment"]
    with pytest.raises(FormatError, match=r"missing field.*commitment"):
        FileHeader.from_json_dict(doc)
    with pytest.raises(FormatError, match="JSON object"):
        FileHeader.from_json_dict([1, 2])  # type: ignore[arg-type]


def test_header_constructor_validates() -> None:
    with pytest.raises(FormatError):
        FileHeader(1, FID, CS, 10, bytes(31))
    with pytest.raises(FormatError):
        FileHeader(3, FID, CS, 10, bytes(32))
    assert FileHeader(1, FID, CS, 10, bytes(32)).version == 1
    assert FileHeader(2, FID, CS, 10, bytes(32)).version == 2
