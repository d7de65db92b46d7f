"""Format v1: share links ``<gateway>/f/<file-id>#<key>``."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from storage.crypto import (
    FILE_ID_BYTES,
    KEY_BYTES,
    decode_file_id,
    decode_key,
    encode_file_id,
    encode_key,
)
from storage.errors import FormatError

_LINK_SHAPE = "<gateway>/f/<file-id>#<key>"


def _check_gateway(gateway: str) -> None:
    if not isinstance(gateway, str) or not gateway.startswith(("http://", "https://")):
        raise FormatError(f"gateway must start with http:// or https://, got {gateway!r}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in gateway):
        raise FormatError("gateway must not contain whitespace or control characters")
    if "?" in gateway or "#" in gateway:
        raise FormatError("gateway must not contain a query ('?') or fragment ('#')")
    if gateway.endswith("/"):
        raise FormatError("gateway must not end with '/'")
    try:
        host = urlsplit(gateway).hostname
    except ValueError as exc:
        raise FormatError(f"gateway is not a valid URL: {exc}") from exc
    if not host:
        raise FormatError(f"gateway has no host: {gateway!r}")


@dataclass(frozen=True)
class ShareLink:
    """A capability: whoever has the URL can fetch and decrypt the file."""

    gateway: str
    file_id: bytes
    key: bytes = field(repr=False)  # keep the secret out of logs and tracebacks

    def __post_init__(self) -> None:
        _check_gateway(self.gateway)
        if len(self.file_id) != FILE_ID_BYTES:
            raise FormatError(f"file id must be {FILE_ID_BYTES} bytes")
        if len(self.key) != KEY_BYTES:
            raise FormatError(f"file key must be {KEY_BYTES} bytes")

    def to_url(self) -> str:
        # The key sits in the fragment, which browsers never send to the server.
        return f"{self.gateway}/f/{encode_file_id(self.file_id)}#{encode_key(self.key)}"

    @classmethod
    def parse(cls, url: str) -> ShareLink:
        """Parse a link made by :meth:`to_url`; FormatError says what is wrong."""
        if not isinstance(url, str):
            raise FormatError(f"share link must be a string, got {type(url).__name__}")
        base, has_fragment, fragment = url.strip().partition("#")
        if not has_fragment or not fragment:
            raise FormatError(
                f"share link has no '#<key>' fragment (expected {_LINK_SHAPE}); the key "
                "travels only in the fragment, so the link was probably cut off when copied"
            )
        gateway, has_marker, id_text = base.rpartition("/f/")
        if not has_marker:
            raise FormatError(f"share link has no '/f/' path (expected {_LINK_SHAPE})")
        try:
            file_id = decode_file_id(id_text)
        except FormatError as exc:
            raise FormatError(f"share link has a bad file id: {exc}") from exc
        try:
            key = decode_key(fragment)
        except FormatError as exc:
            raise FormatError(f"share link has a bad key: {exc}") from exc
        try:
            return cls(gateway=gateway, file_id=file_id, key=key)
        except FormatError as exc:
            raise FormatError(f"share link has a bad gateway: {exc}") from exc
