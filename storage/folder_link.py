"""Folder links: ``<gateway>/d/<file-id>#v1.<key>`` and the folder manifest they name.

Pure: no I/O. The specification is docs/format.md §16. A folder link is a capability for an
ordinary Bitcache file (§5-§8) whose plaintext is the padded **folder manifest**: every file's
relative path, size and own share capability (file id and key). The gateway stores that file
like any other, so it sees only ciphertext; each listed file is then fetched and paid for
chunk by chunk as a plain share link would be.

The manifest is written by whoever shared the link, so a reader treats it as hostile: every
path is checked (relative, no ``..``, no NUL or control characters, bounded length) before
anything is written to disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from storage.capability import ShareLink, _check_gateway
from storage.crypto import (
    FILE_ID_BYTES,
    KEY_BYTES,
    MAX_PLAINTEXT_SIZE,
    decode_file_id,
    decode_key,
    encode_file_id,
    encode_key,
)
from storage.errors import FormatError
from storage.vault import canonical_json, pad, unpad
from storage.vault_tree import check_path

# The version of the link and of the manifest it names. A reader refuses any other.
FOLDER_LINK_VERSION = 1
FOLDER_MEDIA_TYPE = "application/vnd.bitcache.folder+json"
MAX_FOLDER_FILES = 100_000
# Bounds what a reader downloads and parses before it has checked a single path.
MAX_FOLDER_MANIFEST_BYTES = 64 << 20
# The padded manifest is at least this long, so a small folder does not show its size.
MIN_PADDED_BYTES = 1024
_LINK_SHAPE = "<gateway>/d/<file-id>#v1.<key>"
_MANIFEST_FIELDS = frozenset({"version", "name", "files"})
_FILE_FIELDS = frozenset({"path", "size", "file_id", "key"})


@dataclass(frozen=True)
class FolderLink:
    """Whoever has the URL can list the folder and fetch (and pay for) every file in it."""

    gateway: str
    file_id: bytes  # the file that holds the sealed folder manifest
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_gateway(self.gateway)
        if len(self.file_id) != FILE_ID_BYTES:
            raise FormatError(f"file id must be {FILE_ID_BYTES} bytes")
        if len(self.key) != KEY_BYTES:
            raise FormatError(f"folder key must be {KEY_BYTES} bytes")

    def to_url(self) -> str:
        # Like a file link, the key travels only in the fragment; "v1." names the version.
        return (
            f"{self.gateway}/d/{encode_file_id(self.file_id)}"
            f"#v{FOLDER_LINK_VERSION}.{encode_key(self.key)}"
        )

    def manifest_link(self) -> ShareLink:
        """The file link of the manifest file itself (fetched like any shared file)."""
        return ShareLink(self.gateway, self.file_id, self.key)

    @classmethod
    def parse(cls, url: str) -> FolderLink:
        if not isinstance(url, str):
            raise FormatError(f"folder link must be a string, got {type(url).__name__}")
        base, has_fragment, fragment = url.strip().partition("#")
        if not has_fragment or not fragment:
            raise FormatError(
                f"folder link has no '#v1.<key>' fragment (expected {_LINK_SHAPE}); the link "
                "was probably cut off when copied"
            )
        gateway, has_marker, id_text = base.rpartition("/d/")
        if not has_marker:
            raise FormatError(f"folder link has no '/d/' path (expected {_LINK_SHAPE})")
        version, dot, key_text = fragment.partition(".")
        if not dot or not version.startswith("v"):
            raise FormatError(f"folder link fragment must be 'v<version>.<key>' ({_LINK_SHAPE})")
        if version != f"v{FOLDER_LINK_VERSION}":
            raise FormatError(f"unsupported folder link version {version[:8]!r}")
        try:
            file_id = decode_file_id(id_text)
        except FormatError as exc:
            raise FormatError(f"folder link has a bad file id: {exc}") from exc
        try:
            key = decode_key(key_text)
        except FormatError as exc:
            raise FormatError(f"folder link has a bad key: {exc}") from exc
        try:
            return cls(gateway=gateway, file_id=file_id, key=key)
        except FormatError as exc:
            raise FormatError(f"folder link has a bad gateway: {exc}") from exc


def is_folder_link(url: str) -> bool:
    """Whether ``url`` looks like a folder link (to pick the parser; parsing still checks)."""
    base = url.strip().partition("#")[0]
    return "/d/" in base and "/f/" not in base.rpartition("/d/")[2]


@dataclass(frozen=True)
class FolderFile:
    """One file of a shared folder: where it goes, its size, and its own capability."""

    path: str
    size: int
    file_id: bytes
    key: bytes = field(repr=False)

    def link(self, gateway: str) -> ShareLink:
        return ShareLink(gateway, self.file_id, self.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "file_id": encode_file_id(self.file_id),
            "key": encode_key(self.key),
        }


@dataclass(frozen=True)
class FolderManifest:
    """What a folder link names: the folder's name and its files, sorted by path."""

    name: str
    files: tuple[FolderFile, ...]

    def __post_init__(self) -> None:
        try:
            check_path(self.name)
        except ValueError as exc:
            raise FormatError(f"refused folder name {self.name[:80]!r}: {exc}") from None
        if "/" in self.name:
            raise FormatError("a folder name is one bare name, not a path")
        _check_files(self.files)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace, raw UTF-8), files sorted by path."""
        return canonical_json(
            {
                "version": FOLDER_LINK_VERSION,
                "name": self.name,
                "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            }
        )

    def to_plaintext(self) -> bytes:
        """The bytes stored (encrypted) as the manifest file: padded, so only a coarse size
        (Padmé, at least 1 KiB) shows how many files the folder has."""
        return pad(self.to_json_bytes(), MIN_PADDED_BYTES)

    @classmethod
    def from_plaintext(cls, data: bytes) -> FolderManifest:
        if len(data) > MAX_FOLDER_MANIFEST_BYTES:
            raise FormatError("folder manifest is too large")
        return cls.from_json_bytes(unpad(data))

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> FolderManifest:
        try:
            value = json.loads(raw.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"folder manifest is not UTF-8 JSON: {exc}") from exc
        if not isinstance(value, dict) or set(value) != _MANIFEST_FIELDS:
            raise FormatError(f"folder manifest must have exactly {sorted(_MANIFEST_FIELDS)}")
        version = value["version"]
        if isinstance(version, bool) or version != FOLDER_LINK_VERSION:
            raise FormatError(f"unsupported folder manifest version {version!r}")
        name = value["name"]
        if not isinstance(name, str):
            raise FormatError("folder name must be a string")
        files = value["files"]
        if not isinstance(files, list) or len(files) > MAX_FOLDER_FILES:
            raise FormatError(f"files must be a list of at most {MAX_FOLDER_FILES}")
        return cls(name=name, files=tuple(_file_from_json(item) for item in files))


def _no_float(text: str) -> Any:
    raise FormatError(f"folder manifest numbers must be integers, got {text}")


def _file_from_json(item: object) -> FolderFile:
    if not isinstance(item, dict) or set(item) != _FILE_FIELDS:
        raise FormatError(f"a folder file must have exactly {sorted(_FILE_FIELDS)}")
    path, size = item["path"], item["size"]
    if not isinstance(path, str):
        raise FormatError("a folder file's path must be a string")
    if isinstance(size, bool) or not isinstance(size, int):
        raise FormatError("a folder file's size must be an integer")
    return FolderFile(path, size, decode_file_id(item["file_id"]), decode_key(item["key"]))


def _check_files(files: tuple[FolderFile, ...]) -> None:
    if len(files) > MAX_FOLDER_FILES:
        raise FormatError(f"a folder link holds at most {MAX_FOLDER_FILES} files")
    paths: set[str] = set()
    for f in files:
        try:
            check_path(f.path)
        except ValueError as exc:
            # repr() so a hostile path cannot put control characters on the user's terminal.
            raise FormatError(f"refused path {f.path[:80]!r}: {exc}") from None
        if not 0 <= f.size <= MAX_PLAINTEXT_SIZE:
            raise FormatError(f"refused size of {f.path[:80]!r}")
        if len(f.file_id) != FILE_ID_BYTES or len(f.key) != KEY_BYTES:
            raise FormatError("a folder file's capability has the wrong length")
        if f.path in paths:
            raise FormatError(f"path {f.path[:80]!r} is listed twice")
        paths.add(f.path)
    # A path cannot be both a file and a folder of other files ("a" and "a/b").
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise FormatError(f"path {p[:80]!r} is inside a file")
