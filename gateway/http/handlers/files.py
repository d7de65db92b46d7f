"""Uploading a file (create, put chunks, complete) and reading its public state."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.billing.quota import OverQuota
from gateway.http.auth import optional_account, require_account
from gateway.http.metrics import BATCH_OUTCOME
from gateway.http.models import MAX_MANIFEST_BYTES, CreateFileBody
from gateway.http.params import check_chunk_index, chunk_index_param, json_model, load_file
from gateway.http.problems import UPGRADE_HINT, Problem, bad_request, conflict, gone, over_quota
from gateway.persistence import pins
from gateway.persistence.files import (
    ChunkConflict,
    FileConflict,
    FileGone,
    FileRecord,
    NewChunkFile,
)
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
from storage.file_batch import MAX_BATCH_BODY_BYTES, BatchError, BatchItem, parse_batch


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
        raise _free_tier_full(exc) from exc
    except OverQuota as exc:
        raise over_quota(exc) from exc
    return await _state_response(request, record, 201 if created else 200)


def _free_tier_full(exc: FreeTierFull) -> Problem:
    return Problem(
        507, "free-tier-full", "Free storage used up", str(exc), extra={"upgrade": UPGRADE_HINT}
    )


# Chunks of one batch added to IPFS at a time (kubo is the bottleneck, not this process).
BATCH_IPFS_CONCURRENCY = 8


async def create_batch(request: web.Request) -> web.Response:
    """Many free single-chunk files (the sync client's small chunk files) in one request:
    each item checked as create + PUT chunk 0 + complete would check it, the chunks added
    to IPFS a few at a time, then all recorded in one transaction. An item already stored
    is answered "exists" and not stored again. If anything fails, no file of the batch is
    recorded and the chunks it added are released (the batch can be sent again)."""
    s = services(request)
    account = await require_account(request)
    declared = request.content_length
    if declared is not None and declared > MAX_BATCH_BODY_BYTES:
        raise Problem(
            413, "batch-too-large", "Batch too large", f"at most {MAX_BATCH_BODY_BYTES} bytes"
        )
    try:
        items = parse_batch(await request.read())
    except BatchError as exc:
        raise Problem(exc.status, exc.kind, "Bad batch", exc.detail) from exc
    tenant = tenant_of(request)
    now = int(s.clock())
    # Not sent to IPFS again: the items the gateway already holds complete (a resumed sync).
    known = await s.files.states([i.file_id for i in items])
    todo: list[BatchItem] = []
    for item in items:
        state = known.get(item.file_id)
        if state is not None and state[1] != account.id:
            # The same answer for a live or a deleted id: nothing to learn about its owner.
            # The owner's own deleted file is stored again (record_batch checks it is the
            # same file).
            raise conflict(f"file {item.file_id} exists with a different header", "file-exists")
        if state != ("complete", account.id):
            todo.append(item)
    store = s.ipfs_for(tenant)
    sem = asyncio.Semaphore(BATCH_IPFS_CONCURRENCY)

    async def add(item: BatchItem) -> str:
        async with sem:
            return await store.add(item.chunk)

    results = await asyncio.gather(*(add(i) for i in todo), return_exceptions=True)
    added = [r for r in results if isinstance(r, str)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        await _release(request, added)
        raise failure
    limit = await limit_bytes(s.db, tenant, account.id, now)
    cap = tenant.free_tier_total_bytes
    if cap is not None and not await on_free_tier(s.db, account.id, now):
        cap = None  # plan holders pay for their space
    try:
        recorded = (
            await s.files.record_batch(
                [
                    NewChunkFile(i.header, i.manifest, cid, len(i.chunk))
                    for i, cid in zip(todo, added, strict=True)
                ],
                account.id,
                limit,
                tenant.id,
                cap,
                now,
            )
            if todo
            else None
        )
    except (FileConflict, ChunkConflict, FreeTierFull, OverQuota) as exc:
        await _release(request, added)
        if isinstance(exc, FreeTierFull):
            raise _free_tier_full(exc) from exc
        if isinstance(exc, OverQuota):
            raise over_quota(exc) from exc
        slug = "file-exists" if isinstance(exc, FileConflict) else "chunk-exists"
        raise conflict(str(exc), slug) from exc
    except BaseException:
        await _release(request, added)
        raise
    if recorded is not None and recorded.first_references:
        # An unpinner may have unpinned these CIDs between our add and our commit.
        await asyncio.gather(*(store.pin_add(cid) for cid in recorded.first_references))
    stored = set(recorded.stored) if recorded else set()
    request[BATCH_OUTCOME] = (
        len(stored),
        len(items) - len(stored),
        sum(len(i.chunk) for i in todo if i.file_id in stored),
    )
    return web.json_response(
        {
            "items": [
                {"file_id": i.file_id, "state": "stored" if i.file_id in stored else "exists"}
                for i in items
            ],
            "stored": len(stored),
            "existing": len(items) - len(stored),
        }
    )


async def _release(request: web.Request, cids: list[str]) -> None:
    """Chunks added for a batch that recorded nothing: unpinned unless a chunk row uses them."""
    if not cids:
        return
    s = services(request)
    async with s.db.transaction() as conn:
        for cid in sorted(set(cids)):
            await pins.release_unrecorded(conn, cid)
    await s.unpinner.drain(only=sorted(set(cids)))


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
