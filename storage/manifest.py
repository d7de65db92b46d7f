"""Format v1: the encrypted per-file manifest (name, size, media type...)."""

from __future__ import annotations

import json

import nacl.exceptions
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.crypto import (
    FILE_ID_BYTES,
    MAX_CHUNK_SIZE,
    MAX_PLAINTEXT_SIZE,
    MIN_CHUNK_SIZE,
    NONCE_BYTES,
    TAG_BYTES,
    FileKeys,
)
from storage.errors import ChunkAuthError, FormatError

MANIFEST_AD_PREFIX = b"bitcache/v1/manifest"


def _has_bad_chars(text: str) -> bool:
    # Control characters enable header/terminal injection; lone surrogates cannot be UTF-8.
    return any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in text)


class Manifest(BaseModel):
    """Private file metadata; only holders of the file key can read it."""

    # strict: a JSON "5" or true must not become an int.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0, le=MAX_PLAINTEXT_SIZE)
    media_type: str = Field(default="application/octet-stream", min_length=1, max_length=255)
    chunk_size: int = Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
    modified: int | None = Field(default=None, ge=-MAX_PLAINTEXT_SIZE, le=MAX_PLAINTEXT_SIZE)

    @field_validator("name")
    @classmethod
    def _bare_file_name(cls, value: str) -> str:
        # The reader saves under this name: it must never be a path.
        if value in (".", "..") or "/" in value or "\\" in value or _has_bad_chars(value):
            raise ValueError(
                "must be a bare file name: no '/', '\\', NUL, control characters or lone "
                "surrogates, and not '.' or '..'"
            )
        return value

    @field_validator("media_type")
    @classmethod
    def _clean_media_type(cls, value: str) -> str:
        if _has_bad_chars(value):
            raise ValueError("must not contain control characters or lone surrogates")
        return value


def manifest_associated_data(file_id: bytes) -> bytes:
    """AD = "bitcache/v1/manifest" || file id."""
    if len(file_id) != FILE_ID_BYTES:
        raise FormatError(f"file id must be {FILE_ID_BYTES} bytes, got {len(file_id)}")
    return MANIFEST_AD_PREFIX + bytes(file_id)


def manifest_to_json(manifest: Manifest) -> bytes:
    """Canonical plaintext: compact UTF-8 JSON with sorted keys, every field present."""
    return json.dumps(
        manifest.model_dump(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def seal_manifest(
    keys: FileKeys, file_id: bytes, manifest: Manifest, nonce: bytes | None = None
) -> bytes:
    """nonce(24) || XChaCha20-Poly1305(manifest_key, nonce, AD, JSON). Random nonce by default."""
    if nonce is None:
        nonce = nacl.utils.random(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise FormatError(f"manifest nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    ad = manifest_associated_data(file_id)
    body = crypto_aead_xchacha20poly1305_ietf_encrypt(
        manifest_to_json(manifest), ad, bytes(nonce), keys.manifest_key
    )
    return bytes(nonce) + body


def open_manifest(keys: FileKeys, file_id: bytes, sealed: bytes) -> Manifest:
    """Decrypt and validate a sealed manifest."""
    ad = manifest_associated_data(file_id)
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise ChunkAuthError(
            f"manifest: {len(sealed)} bytes is shorter than the "
            f"{NONCE_BYTES + TAG_BYTES}-byte minimum"
        )
    try:
        plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(sealed[NONCE_BYTES:]), ad, bytes(sealed[:NONCE_BYTES]), keys.manifest_key
        )
    except nacl.exceptions.CryptoError:
        raise ChunkAuthError(
            "manifest failed authentication: tampered, wrong key, or another file's manifest"
        ) from None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"manifest is not valid UTF-8: {exc}") from exc
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise FormatError(f"manifest is invalid: {problems}") from exc
