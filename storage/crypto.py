"""Formats v1 and v2: file keys, subkeys, file header and chunk sealing (docs/format.md).

The two versions differ only in how a writer derives a chunk's synthetic nonce (v1: keyed
BLAKE2b, v2: keyed BLAKE3, several times faster); chunks are opened the same way in both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import blake3
import nacl.exceptions
import nacl.utils

from storage import aead
from storage.errors import ChunkAuthError, FormatError, WrongKeyError

# What writers produce; readers accept every version in READABLE_VERSIONS.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
KEY_BYTES = 32
FILE_ID_BYTES = 16
NONCE_BYTES = 24
TAG_BYTES = 16
CHUNK_OVERHEAD = NONCE_BYTES + TAG_BYTES
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 16 << 20
# Sizes travel as JSON numbers; keep them exact in a JavaScript double.
MAX_PLAINTEXT_SIZE = 2**53 - 1
_MAX_INDEX = 2**64 - 1

CHUNK_AD_PREFIX = b"bitcache/v1/chunk"
INFO_CHUNK_KEY = b"bitcache/v1/chunk-key"
INFO_NONCE_KEY = b"bitcache/v1/nonce-key"
INFO_NONCE_KEY_V2 = b"bitcache/v2/nonce-key"
INFO_MANIFEST_KEY = b"bitcache/v1/manifest-key"
INFO_KEY_COMMITMENT = b"bitcache/v1/key-commitment"

_HEADER_FIELDS = frozenset({"version", "file_id", "chunk_size", "plaintext_size", "commitment"})
_B32_RE = re.compile(r"[a-z2-7]{26}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


# --- argument checks --------------------------------------------------------------------------


def _require_bytes(value: bytes, length: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise FormatError(f"{what} must be {length} bytes, got {type(value).__name__}")
    if len(value) != length:
        raise FormatError(f"{what} must be {length} bytes, got {len(value)} bytes")
    return bytes(value)


def _require_int(value: object, low: int, high: int, what: str) -> int:
    # bool is an int subclass; a JSON `true` must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise FormatError(f"{what} must be in [{low}, {high}], got {value}")
    return value


def _require_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"format version must be an integer, got {type(version).__name__}")
    if version not in READABLE_VERSIONS:
        supported = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise FormatError(f"unsupported format version {version}; this reader supports {supported}")
    return version


def _check_sizes(plaintext_size: int, chunk_size: int) -> None:
    _require_int(chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, "chunk_size")
    _require_int(plaintext_size, 0, MAX_PLAINTEXT_SIZE, "plaintext_size")


# --- text encodings ---------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Base64url (RFC 4648 §5) without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, length: int, what: str) -> bytes:
    """Strictly decode unpadded base64url that must yield exactly ``length`` bytes."""
    chars = len(b64url_encode(bytes(length)))
    if not isinstance(text, str) or len(text) != chars or not _B64URL_RE.fullmatch(text):
        raise FormatError(f"{what} must be {chars} base64url characters without padding")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Non-zero trailing bits would give one value several spellings.
    if b64url_encode(data) != text:
        raise FormatError(f"{what} is not canonical base64url (non-zero trailing bits)")
    return data


def b64url_decode_any(text: object, what: str) -> bytes:
    """Strictly decode unpadded, canonical base64url of any length (manifests, objects)."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise FormatError(f"{what} must be unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise FormatError(f"{what} is not canonical base64url (non-zero trailing bits)")
    return data


def encode_file_id(file_id: bytes) -> str:
    """File id as 26 lowercase base32 characters (RFC 4648, no padding)."""
    raw = _require_bytes(file_id, FILE_ID_BYTES, "file id")
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_file_id(text: str) -> bytes:
    """Inverse of :func:`encode_file_id`; only the canonical lowercase form is accepted."""
    if not isinstance(text, str) or not _B32_RE.fullmatch(text):
        shown = repr(text[:40]) if isinstance(text, str) else type(text).__name__
        raise FormatError(f"file id must be 26 lowercase base32 characters (a-z, 2-7), got {shown}")
    data = base64.b32decode(text.upper() + "======")
    if encode_file_id(data) != text:
        raise FormatError("file id is not canonical base32 (non-zero trailing bits)")
    return data


def encode_key(key: bytes) -> str:
    """File key as 43 base64url characters without padding."""
    return b64url_encode(_require_bytes(key, KEY_BYTES, "file key"))


def decode_key(text: str) -> bytes:
    """Inverse of :func:`encode_key`."""
    return b64url_decode(text, KEY_BYTES, "file key")


# --- keys -------------------------------------------------------------------------------------


def new_file_key() -> bytes:
    """A fresh random 32-byte file key."""
    return nacl.utils.random(KEY_BYTES)


def new_file_id() -> bytes:
    """A fresh random 16-byte file id."""
    return nacl.utils.random(FILE_ID_BYTES)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract then expand."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be in [1, 8160]")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@dataclass(frozen=True)
class FileKeys:
    """Subkeys of one file in format ``version``. Only ``commitment`` is public."""

    chunk_key: bytes = field(repr=False)
    nonce_key: bytes = field(repr=False)
    manifest_key: bytes = field(repr=False)
    commitment: bytes
    # Which synthetic-nonce hash ``nonce_key`` belongs to (v1 BLAKE2b, v2 BLAKE3).
    version: int = FORMAT_VERSION


def derive_keys(key: bytes, file_id: bytes, version: int = FORMAT_VERSION) -> FileKeys:
    """Derive the subkeys of file ``file_id`` from its key (HKDF, salt = file id).

    Only the nonce key depends on ``version``: one key is never used with two hashes.
    """
    ikm = _require_bytes(key, KEY_BYTES, "file key")
    salt = _require_bytes(file_id, FILE_ID_BYTES, "file id")
    _require_version(version)
    return FileKeys(
        chunk_key=hkdf_sha256(ikm, salt, INFO_CHUNK_KEY),
        nonce_key=hkdf_sha256(ikm, salt, INFO_NONCE_KEY if version == 1 else INFO_NONCE_KEY_V2),
        manifest_key=hkdf_sha256(ikm, salt, INFO_MANIFEST_KEY),
        commitment=hkdf_sha256(ikm, salt, INFO_KEY_COMMITMENT),
        version=version,
    )


def check_key(keys: FileKeys, expected_commitment: bytes) -> None:
    """Raise WrongKeyError unless ``keys`` match the file's published commitment."""
    # XChaCha20-Poly1305 is not key-committing, so a wrong key is caught here, not by the AEAD.
    if not hmac.compare_digest(keys.commitment, bytes(expected_commitment)):
        raise WrongKeyError("the key does not match this file (key commitment mismatch)")


# --- chunk geometry ---------------------------------------------------------------------------


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """Number of chunks; an empty file is one empty chunk."""
    _check_sizes(plaintext_size, chunk_size)
    return max(1, -(-plaintext_size // chunk_size))


def plaintext_chunk_size(index: int, plaintext_size: int, chunk_size: int) -> int:
    """Plaintext length of chunk ``index``: ``chunk_size`` except for the last chunk."""
    count = chunk_count(plaintext_size, chunk_size)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise FormatError(f"chunk index {index!r} out of range for a file of {count} chunks")
    return chunk_size if index < count - 1 else plaintext_size - (count - 1) * chunk_size


def sealed_chunk_size(index: int, plaintext_size: int, chunk_size: int) -> int:
    """Stored length of chunk ``index`` (plaintext + 40)."""
    return plaintext_chunk_size(index, plaintext_size, chunk_size) + CHUNK_OVERHEAD


# --- chunks -----------------------------------------------------------------------------------


def chunk_associated_data(file_id: bytes, index: int, is_last: bool) -> bytes:
    """AD = "bitcache/v1/chunk" || file id || uint64_be(index) || uint8(last)."""
    fid = _require_bytes(file_id, FILE_ID_BYTES, "file id")
    _require_int(index, 0, _MAX_INDEX, "chunk index")
    return CHUNK_AD_PREFIX + fid + index.to_bytes(8, "big") + (b"\x01" if is_last else b"\x00")


def synthetic_nonce(keys: FileKeys, ad: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
    """The writer's nonce: keyed hash of AD || plaintext (v1 BLAKE2b-192, v2 BLAKE3, 24 bytes).

    AD has a fixed length, so AD || plaintext is unambiguous; hashed in two updates rather
    than building the concatenation (a copy of the whole chunk).
    """
    if keys.version == 1:
        h1 = hashlib.blake2b(ad, digest_size=NONCE_BYTES, key=keys.nonce_key)
        h1.update(plaintext)
        return h1.digest()
    h2 = blake3.blake3(ad, key=keys.nonce_key)
    h2.update(plaintext)
    return h2.digest(length=NONCE_BYTES)


def seal_chunk(
    keys: FileKeys,
    file_id: bytes,
    index: int,
    is_last: bool,
    plaintext: bytes | bytearray | memoryview,
) -> bytes:
    """Seal one chunk: nonce(24) || XChaCha20-Poly1305(chunk_key, nonce, AD, plaintext).

    The nonce is synthetic (keys.version decides the hash), so sealing is deterministic.
    """
    ad = chunk_associated_data(file_id, index, is_last)
    nonce = synthetic_nonce(keys, ad, plaintext)
    return aead.seal(plaintext, ad, nonce, keys.chunk_key)  # one buffer, no concatenation


def open_chunk(
    keys: FileKeys,
    file_id: bytes,
    index: int,
    is_last: bool,
    sealed: bytes | bytearray | memoryview,
) -> bytes:
    """Open one sealed chunk of any readable version; ChunkAuthError if it is not chunk
    ``index`` of this file.

    The nonce is not recomputed: the tag already authenticates nonce, AD and ciphertext under
    chunk_key, which only holders of the file key have (docs/format.md §6.4).
    """
    ad = chunk_associated_data(file_id, index, is_last)
    if len(sealed) < CHUNK_OVERHEAD:
        raise ChunkAuthError(
            f"{_where(index, is_last)}: {len(sealed)} bytes is shorter than the "
            f"{CHUNK_OVERHEAD}-byte minimum"
        )
    try:
        return aead.open(sealed, ad, keys.chunk_key)  # reads the chunk in place
    except nacl.exceptions.CryptoError:
        raise ChunkAuthError(
            f"{_where(index, is_last)} failed authentication: tampered, from another position "
            "or file, or the file was truncated"
        ) from None


def _where(index: int, is_last: bool) -> str:
    return f"chunk {index}{' (last)' if is_last else ''}"


# --- header -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    """Public per-file metadata stored by the server. Validated on construction."""

    version: int
    file_id: bytes
    chunk_size: int
    plaintext_size: int
    commitment: bytes

    def __post_init__(self) -> None:
        _require_version(self.version)
        _require_bytes(self.file_id, FILE_ID_BYTES, "file id")
        _check_sizes(self.plaintext_size, self.chunk_size)
        _require_bytes(self.commitment, KEY_BYTES, "key commitment")

    @property
    def chunk_count(self) -> int:
        return chunk_count(self.plaintext_size, self.chunk_size)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "file_id": encode_file_id(self.file_id),
            "chunk_size": self.chunk_size,
            "plaintext_size": self.plaintext_size,
            "commitment": b64url_encode(self.commitment),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> FileHeader:
        """Parse and validate a header object; FormatError on anything unexpected."""
        if not isinstance(data, Mapping):
            raise FormatError(f"file header must be a JSON object, got {type(data).__name__}")
        missing = sorted(_HEADER_FIELDS - data.keys())
        unknown = sorted(str(k) for k in data.keys() - _HEADER_FIELDS)
        if missing:
            raise FormatError(f"file header is missing field(s): {', '.join(missing)}")
        if unknown:
            raise FormatError(f"file header has unknown field(s): {', '.join(unknown)}")
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise FormatError("file header version must be an integer")
        return cls(
            version=_require_version(version),
            file_id=decode_file_id(data["file_id"]),
            chunk_size=data["chunk_size"],
            plaintext_size=data["plaintext_size"],
            commitment=b64url_decode(data["commitment"], KEY_BYTES, "key commitment"),
        )


# --- whole-file helpers -----------------------------------------------------------------------


class _FileCipher:
    """What the encryptor and decryptor of one file share: its keys and header."""

    _keys: FileKeys
    _header: FileHeader

    @property
    def keys(self) -> FileKeys:
        return self._keys

    @property
    def header(self) -> FileHeader:
        return self._header

    @property
    def chunk_count(self) -> int:
        return self._header.chunk_count


class FileEncryptor(_FileCipher):
    """Seals the chunks of one file, checking each chunk has the length its index requires."""

    def __init__(
        self,
        key: bytes,
        file_id: bytes,
        plaintext_size: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        version: int = FORMAT_VERSION,
    ) -> None:
        # Older versions stay writable: the test vectors, or re-sealing chunks sealed before.
        self._keys = derive_keys(key, file_id, version)
        self._header = FileHeader(
            version=version,
            file_id=bytes(file_id),
            chunk_size=chunk_size,
            plaintext_size=plaintext_size,
            commitment=self._keys.commitment,
        )

    def seal(self, index: int, plaintext: bytes) -> bytes:
        h = self._header
        expected = plaintext_chunk_size(index, h.plaintext_size, h.chunk_size)
        if len(plaintext) != expected:
            raise FormatError(f"chunk {index} must be {expected} bytes, got {len(plaintext)}")
        return seal_chunk(self._keys, h.file_id, index, index == self.chunk_count - 1, plaintext)


class FileDecryptor(_FileCipher):
    """Opens the chunks of one file; rejects a wrong key before any chunk is read."""

    def __init__(self, key: bytes, header: FileHeader) -> None:
        self._keys = derive_keys(key, header.file_id, header.version)
        check_key(self._keys, header.commitment)
        self._header = header

    def open(self, index: int, sealed: bytes | bytearray | memoryview) -> bytes:
        h = self._header
        expected = sealed_chunk_size(index, h.plaintext_size, h.chunk_size)
        # Opened length is sealed length - 40, so checking first avoids decrypting junk.
        if len(sealed) != expected:
            raise ChunkAuthError(
                f"chunk {index}: expected {expected} sealed bytes, got {len(sealed)} "
                "(truncated, spliced or the header's sizes are wrong)"
            )
        return open_chunk(self._keys, h.file_id, index, index == self.chunk_count - 1, sealed)
