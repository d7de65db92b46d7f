"""Format v1, vault: what one tree object says (a folder, or a file and its versions).

The JSON inside a sealed tree object (docs/format.md §14.6). Pure; validated on the way in,
so a device never acts on a path that could escape its folder.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.crypto import MAX_PLAINTEXT_SIZE
from storage.errors import FormatError
from storage.vault import ChunkRef

MAX_PATH_CHARS = 4096
MAX_VERSIONS = 1000
_MAX_TIME = 2**63 - 1
# Control characters and lone surrogates (one regex: a sync scan checks every name).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_path(value: str) -> str:
    """A relative POSIX path of bare names: no empty, '.', '..' part, no control characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_PATH_CHARS:
        raise ValueError(f"path must be 1-{MAX_PATH_CHARS} characters")
    if _FORBIDDEN.search(value):
        raise ValueError("path must not contain control characters or lone surrogates")
    for part in value.split("/"):
        if part in ("", ".", "..") or "\\" in part or len(part.encode()) > 255:
            raise ValueError("path parts must be bare names of at most 255 bytes")
    return value


class Version(BaseModel):
    """One version of a file: its bytes are the chunks, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    n: int = Field(ge=1)
    size: int = Field(ge=0, le=MAX_PLAINTEXT_SIZE)
    mtime_ns: int = Field(ge=-_MAX_TIME, le=_MAX_TIME)
    time: int = Field(ge=0, le=_MAX_TIME)
    device: str = Field(min_length=1, max_length=64)
    chunks: list[list[Any]]

    @field_validator("chunks")
    @classmethod
    def _chunks(cls, value: list[list[Any]]) -> list[list[Any]]:
        for item in value:
            ChunkRef.from_json(item)
        return value

    def refs(self) -> list[ChunkRef]:
        return [ChunkRef.from_json(c) for c in self.chunks]

    def content_id(self) -> bytes:
        """Same chunks in the same order: same content (MACs are keyed, so this is too)."""
        h = hashlib.blake2b(digest_size=32, person=b"bitcache-vcid")
        h.update(self.size.to_bytes(8, "big"))
        for ref in self.refs():
            h.update(ref.mac + ref.length.to_bytes(4, "big"))
        return h.digest()


class Entry(BaseModel):
    """A folder or a file at ``path``. ``deleted`` set means it is in the trash."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Literal["file", "dir"]
    path: str
    counter: int = Field(ge=0)  # the vault change counter this object was written at
    deleted: int | None = Field(default=None, ge=0, le=_MAX_TIME)
    versions: list[Version] = Field(default_factory=list, max_length=MAX_VERSIONS)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @property
    def current(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Entry:
        try:
            entry = cls.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in exc.errors()
            )
            raise FormatError(f"vault entry is invalid: {problems}") from exc
        if entry.kind == "dir" and entry.versions:
            raise FormatError("a folder has no versions")
        numbers = [v.n for v in entry.versions]
        if numbers != sorted(set(numbers)):
            raise FormatError("version numbers must increase")
        return entry
