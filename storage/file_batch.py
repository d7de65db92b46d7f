"""The body of `POST /v1/files/batch`: many sealed single-chunk files in one request.

Wire format (docs/api.md, "Batch of small files")::

    u32 big-endian  n = length of the index
    n bytes         index: JSON {"items": [{"header": {...}, "manifest": "<b64url>",
                                            "size": <sealed chunk bytes>}, ...]}
    then            every item's one sealed chunk, in index order, back to back

Each item is checked as `POST /v1/files` and `PUT .../chunks/0` check it (header, manifest
size, the chunk's exact sealed size), plus what makes a batch: one chunk per file, no file id
twice, bounded count and bytes, and the chunk bytes adding up to the body exactly.
Shared by the gateway (parse) and the sync client (encode). Pure; no I/O.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage.crypto import FileHeader, b64url_decode_any, encode_file_id, sealed_chunk_size
from storage.errors import FormatError

MAX_MANIFEST_BYTES = 64 * 1024  # as for POST /v1/files (gateway.http.models)
MAX_BATCH_ITEMS = 64
MAX_BATCH_CHUNK_BYTES = 8 << 20  # sealed chunk bytes in one batch
MAX_BATCH_INDEX_BYTES = 1 << 20  # a chunk file's manifest is about 200 bytes
MAX_BATCH_BODY_BYTES = 4 + MAX_BATCH_INDEX_BYTES + MAX_BATCH_CHUNK_BYTES
BATCH_MEDIA_TYPE = "application/vnd.bitcache.file-batch"
_PREFIX = struct.Struct(">I")


class BatchError(Exception):
    """A refused batch: the problem's status, type and detail."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    header: dict[str, Any]
    manifest: str = Field(min_length=1, max_length=MAX_MANIFEST_BYTES * 2)
    size: int = Field(ge=1, le=MAX_BATCH_CHUNK_BYTES)


class _Index(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Item] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


@dataclass(frozen=True)
class BatchItem:
    file_id: str
    header: FileHeader
    manifest: bytes
    chunk: bytes


def encode_batch(items: list[tuple[dict[str, Any], str, bytes]]) -> bytes:
    """The body for (header JSON, manifest base64url, sealed chunk) items (the client's side)."""
    index = json.dumps(
        {"items": [{"header": h, "manifest": m, "size": len(c)} for h, m, c in items]},
        separators=(",", ":"),
    ).encode()
    return b"".join([_PREFIX.pack(len(index)), index, *(c for _, _, c in items)])


def parse_batch(body: bytes) -> list[BatchItem]:
    """The batch's items, each checked; raises BatchError (a 4xx problem) otherwise."""
    if len(body) > MAX_BATCH_BODY_BYTES:
        raise BatchError(413, "batch-too-large", f"a batch is at most {MAX_BATCH_BODY_BYTES} bytes")
    if len(body) < _PREFIX.size:
        raise BatchError(400, "bad-batch", "the body is shorter than its index length")
    (n,) = _PREFIX.unpack_from(body)
    if n > MAX_BATCH_INDEX_BYTES or _PREFIX.size + n > len(body):
        raise BatchError(400, "bad-batch", "the index length runs past the body or its bound")
    try:
        index = _Index.model_validate_json(body[_PREFIX.size : _PREFIX.size + n])
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
        raise BatchError(
            422, "bad-batch", f"index: {where}: {exc.errors()[0]['msg']}" if where else str(exc)
        ) from None
    total = sum(item.size for item in index.items)
    if total > MAX_BATCH_CHUNK_BYTES:
        raise BatchError(
            413, "batch-too-large", f"a batch holds at most {MAX_BATCH_CHUNK_BYTES} chunk bytes"
        )
    at = _PREFIX.size + n
    if len(body) - at != total:
        raise BatchError(
            422,
            "wrong-chunk-size",
            f"the items declare {total} chunk bytes but the body holds {len(body) - at}",
        )
    out: list[BatchItem] = []
    seen: set[str] = set()
    for i, item in enumerate(index.items):
        try:
            header = FileHeader.from_json_dict(item.header)
            manifest = b64url_decode_any(item.manifest, "manifest")
        except FormatError as exc:
            raise BatchError(400, "bad-header", f"item {i}: {exc}") from exc
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise BatchError(400, "bad-request", f"item {i}: manifest too large")
        if header.chunk_count != 1:
            raise BatchError(
                422, "not-single-chunk", f"item {i}: a batch holds files of exactly one chunk"
            )
        expected = sealed_chunk_size(0, header.plaintext_size, header.chunk_size)
        if item.size != expected:
            raise BatchError(
                422,
                "wrong-chunk-size",
                f"item {i}: chunk 0 must be {expected} bytes, got {item.size}",
            )
        file_id = encode_file_id(header.file_id)
        if file_id in seen:
            raise BatchError(422, "duplicate-file-id", f"item {i}: file {file_id} is twice")
        seen.add(file_id)
        out.append(BatchItem(file_id, header, manifest, body[at : at + item.size]))
        at += item.size
    return out
