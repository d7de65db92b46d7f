"""Uploading a file (create, put chunks, complete) and reading its public state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.billing.quota import OverQuota
from gateway.http.auth import optional_account, require_account
from gateway.http.models import MAX_MANIFEST_BYTES, CreateFileBody
from gateway.http.params import check_chunk_index, chunk_index_param, json_model, load_file
from gateway.http.problems import UPGRADE_HINT, Problem, bad_request, conflict, gone, over_quota
from gateway.persistence.files import ChunkConflict, FileConflict, FileGone, FileRecord
from gateway.persistence.free_tier import FreeTierFull, on_free_tier
from gateway.persistence.quotas import limit_bytes
from gateway.services import price_default, public_base, services, tenant_of
from storage.crypto import (
    CHUNK_OVERHEAD,
    MAX_CHUNK_SIZE,
    FileHeader,
    b64url_decode_any,
    b64url_encode,
)
from storage.errors import FormatError


def file_state(
    request: web.Request, record: FileRecord, present: int, missing: list[int], owned: bool
) -> dict[str, Any]:
    base = public_base(request)
    return {
        "file_id": record.id,
        "state": record.state,
        "header": record.header.to_json_dict(),
        "manifest": b64url_encode(record.manifest),
        "chunk_count": record.chunk_count,
        "price_msat": record.price_msat,
        "chunks_present": present,
        "missing": missing,
        "owned": owned,
        "link_base": f"{base}/f/{record.id}",
    }


async def _state_response(request: web.Request, record: FileRecord, status: int) -> web.Response:
    present, missing = (
        (record.chunk_count, [])
        if record.complete
        else await services(request).files.progress(record.id, record.chunk_count)
    )
    account = await optional_account(request)
    owned = account is not None and account.id == record.owner_id
    return web.json_response(file_state(request, record, present, missing, owned), status=status)


async def create_file(request: web.Request) -> web.Response:
    s = services(request)
    account = await require_account(request)
    body = await json_model(request, CreateFileBody)
    try:
        header = FileHeader.from_json_dict(body.header)
        manifest = b64url_decode_any(body.manifest, "manifest")
    except FormatError as exc:
        raise bad_request(str(exc), "bad-header") from exc
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise bad_request("manifest too large")
    tenant = tenant_of(request)
    price = price_default(request) if body.price_msat is None else body.price_msat
    now = int(s.clock())
    limit = await limit_bytes(s.db, tenant, account.id, now)
    cap = tenant.free_tier_total_bytes
    if cap is not None and not await on_free_tier(s.db, account.id, now):
        cap = None  # plan holders pay for their space
    try:
        record, created = await s.files.create(
            header, manifest, price, account.id, limit, tenant.id, cap, now
        )
    except FileConflict as exc:
        raise conflict(str(exc), "file-exists") from exc
    except FreeTierFull as exc:
        raise Problem(
            507,
            "free-tier-full",
            "Free storage used up",
            str(exc),
            extra={"upgrade": UPGRADE_HINT},
        ) from exc
    except OverQuota as exc:
        raise over_quota(exc) from exc
    return await _state_response(request, record, 201 if created else 200)


async def _owned_file(request: web.Request, action: str) -> FileRecord:
    """The file in the path, if the caller's account owns it (403 otherwise)."""
    account = await require_account(request)
    record = await load_file(request)
    if record.owner_id != account.id:
        raise Problem(403, "forbidden", "Forbidden", f"only the file's owner can {action} it")
    return record


async def delete_file(request: web.Request) -> web.Response:
    s = services(request)
    record = await _owned_file(request, "delete")
    cids = await s.files.delete(record.id)
    await s.unpinner.drain()  # best effort now; the queue is retried if kubo is down
    return web.json_response(
        {
            "file_id": record.id,
            "state": "deleted",
            "freed_bytes": record.stored_bytes,
            "chunks": len(cids),
        }
    )


async def get_file(request: web.Request) -> web.Response:
    return await _state_response(request, await load_file(request), 200)


async def put_chunk(request: web.Request) -> web.Response:
    s = services(request)
    index = chunk_index_param(request)
    record = await _owned_file(request, "upload to")
    check_chunk_index(record, index)
    expected = record.sealed_size(index)
    declared = request.content_length
    if declared is not None and declared > MAX_CHUNK_SIZE + CHUNK_OVERHEAD:
        raise Problem(
            413,
            "chunk-too-large",
            "Chunk too large",
            f"a chunk is at most {MAX_CHUNK_SIZE + CHUNK_OVERHEAD} bytes",
        )
    if declared is not None and declared != expected:
        raise _wrong_size(index, expected, declared)
    data = await request.read()
    if len(data) != expected:
        raise _wrong_size(index, expected, len(data))
    store = s.ipfs_for(tenant_of(request))  # pins with the tenant's replication
    epoch = await s.files.pin_epoch()  # before the add: see gateway/persistence/pins.py
    cid = await store.add(data)
    try:
        created, repin = await s.files.put_chunk(record.id, index, cid, len(data), epoch)
    except (ChunkConflict, FileGone) as exc:
        # The rejected bytes' pin was released unless another chunk uses that CID (the
        # same ciphertext may belong to another file): unpin now if nobody does.
        await s.unpinner.drain(only=[cid])
        if isinstance(exc, FileGone):
            raise gone(str(exc)) from exc
        raise conflict(str(exc), "chunk-exists") from exc
    if repin:
        # An unpinner may have unpinned this CID between our add and our commit.
        await store.pin_add(cid)
    return web.json_response({"index": index, "cid": cid}, status=201 if created else 200)


def _wrong_size(index: int, expected: int, got: int) -> Problem:
    return Problem(
        422,
        "wrong-chunk-size",
        "Wrong chunk size",
        f"chunk {index} must be {expected} bytes, got {got}",
    )


async def complete_file(request: web.Request) -> web.Response:
    s = services(request)
    record = await _owned_file(request, "complete")
    try:
        missing = await s.files.mark_complete(record.id, record.chunk_count)
    except FileGone as exc:
        raise gone(str(exc)) from exc
    if missing:
        raise conflict(
            f"{len(missing)} chunk(s) not uploaded yet", "upload-incomplete", missing=missing
        )
    completed = await s.files.get(record.id)
    assert completed is not None
    return await _state_response(request, completed, 200)
