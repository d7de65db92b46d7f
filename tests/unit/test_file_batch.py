"""The batch body of POST /v1/files/batch: encoding, parsing and every refusal."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import pytest

from gateway.http.models import MAX_MANIFEST_BYTES as GATEWAY_MANIFEST_BYTES
from storage.crypto import FileEncryptor, b64url_encode, encode_file_id
from storage.file_batch import (
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_ITEMS,
    MAX_MANIFEST_BYTES,
    BatchError,
    encode_batch,
    parse_batch,
)


def item(size: int = 5000, chunk_size: int | None = None) -> tuple[dict[str, Any], str, bytes]:
    chunk_size = chunk_size or max(4096, size)
    enc = FileEncryptor(os.urandom(32), os.urandom(16), size, chunk_size)
    sealed = enc.seal(0, bytes(min(size, chunk_size)))
    return enc.header.to_json_dict(), b64url_encode(os.urandom(200)), sealed


def refused(body: bytes) -> BatchError:
    with pytest.raises(BatchError) as exc:
        parse_batch(body)
    return exc.value


def raw(index: Any, chunks: bytes = b"") -> bytes:
    text = json.dumps(index).encode()
    return struct.pack(">I", len(text)) + text + chunks


def test_round_trip_keeps_order_ids_and_bytes() -> None:
    items = [item(100), item(5000), item(70_000)]
    parsed = parse_batch(encode_batch(items))
    assert [p.chunk for p in parsed] == [c for _, _, c in items]
    assert [p.file_id for p in parsed] == [h["file_id"] for h, _, _ in items]
    assert [encode_file_id(p.header.file_id) for p in parsed] == [p.file_id for p in parsed]
    assert [p.header.to_json_dict() for p in parsed] == [h for h, _, _ in items]
    assert len({p.file_id for p in parsed}) == 3


def test_manifest_bound_matches_the_single_create() -> None:
    assert MAX_MANIFEST_BYTES == GATEWAY_MANIFEST_BYTES


def test_duplicate_file_id_is_refused() -> None:
    one = item()
    err = refused(encode_batch([one, item(), one]))
    assert (err.status, err.kind) == (422, "duplicate-file-id")


def test_declared_size_must_be_the_sealed_size() -> None:
    header, manifest, chunk = item(5000)
    body = raw(
        {"items": [{"header": header, "manifest": manifest, "size": len(chunk) - 1}]}, chunk[:-1]
    )
    err = refused(body)
    assert (err.status, err.kind) == (422, "wrong-chunk-size")


def test_chunk_bytes_must_fill_the_body_exactly() -> None:
    body = encode_batch([item(), item()])
    assert refused(body + b"x").kind == "wrong-chunk-size"
    assert refused(body[:-1]).kind == "wrong-chunk-size"


def test_multi_chunk_file_is_refused() -> None:
    header, manifest, _ = item(10_000, chunk_size=4096)  # three chunks
    size = 4096 + 40
    err = refused(
        raw({"items": [{"header": header, "manifest": manifest, "size": size}]}, bytes(size))
    )
    assert (err.status, err.kind) == (422, "not-single-chunk")


def test_bad_header_and_manifest() -> None:
    header, manifest, chunk = item()
    bad = dict(header, commitment="!!")
    body = raw({"items": [{"header": bad, "manifest": manifest, "size": len(chunk)}]}, chunk)
    assert refused(body).status == 400
    body = raw({"items": [{"header": header, "manifest": "$$$", "size": len(chunk)}]}, chunk)
    assert refused(body).status == 400
    big = b64url_encode(bytes(MAX_MANIFEST_BYTES + 1))
    body = raw({"items": [{"header": header, "manifest": big, "size": len(chunk)}]}, chunk)
    assert refused(body).status in (400, 422)


def test_shapes_and_bounds() -> None:
    assert refused(b"").status == 400
    assert refused(b"\x00\x00").status == 400
    assert refused(struct.pack(">I", 1000) + b"{}").status == 400  # index past the body
    assert refused(raw({"items": []})).status == 422
    assert refused(raw({"items": [], "extra": 1})).status == 422
    assert refused(raw([1, 2])).status == 422
    assert refused(struct.pack(">I", 3) + b"{x}").status == 422
    err = refused(bytes(MAX_BATCH_BODY_BYTES + 1))
    assert (err.status, err.kind) == (413, "batch-too-large")
    header, manifest, chunk = item(100)
    many = [{"header": header, "manifest": manifest, "size": len(chunk)}] * (MAX_BATCH_ITEMS + 1)
    assert refused(raw({"items": many}, chunk * (MAX_BATCH_ITEMS + 1))).status == 422


def test_total_chunk_bytes_are_bounded() -> None:
    items = [item(2 << 20) for _ in range(5)]  # 10 MiB of chunks, in a small enough body
    index = json.dumps(
        {"items": [{"header": h, "manifest": m, "size": len(c)} for h, m, c in items]}
    ).encode()
    body = struct.pack(">I", len(index)) + index  # the chunks are never read
    err = refused(body)
    assert (err.status, err.kind) == (413, "batch-too-large")
