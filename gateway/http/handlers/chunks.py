"""GET a chunk: 402 with an L402 challenge until paid, then the ciphertext streamed from IPFS.

Paid with a chunk token (bought with an invoice, or earlier with credit), or with a credit
token: then the range asked for (``?count=N``) is paid by one debit of the credit before
anything is served, and the answer carries the range's chunk token (``Bitcache-Token``,
presented with the credit's preimage) so the range's other chunks need no further debit.

GET a run (``/v1/files/{id}/chunks?first=F&last=L``): chunks F..L sealed, one after another
in one answer, for a client holding a chunk token that covers them all (or for free or
owned files). Each chunk still comes from storage on its own; what a run saves is the
per-request work of HTTP, of the database and of the client, which was about a third of
a 1 MiB chunk's cost on both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

import l402
from gateway.billing.credit import CreditRefused, RangeBought
from gateway.billing.pricing import purchase_range
from gateway.http.auth import optional_account
from gateway.http.chunk_stream import discard_cat, early_cat, stream_block, stream_blocks
from gateway.http.params import (
    check_chunk_index,
    chunk_index_param,
    int_param,
    load_file,
    load_file_and_chunk,
    spend_invoice_allowance,
)
from gateway.http.problems import Problem, bad_request, conflict, not_found, payment_required
from gateway.persistence.files import ChunkRecord, FileRecord
from gateway.services import services, tenant_of
from ipfs.kubo_socket import CatSocket


async def get_chunk(request: web.Request) -> web.StreamResponse:
    s = services(request)
    index = chunk_index_param(request)
    count_param(request)  # malformed ?count= is a 400 even when the chunk is free or owned
    record, chunk = await load_file_and_chunk(request, index)
    check_chunk_index(record, index)
    authorization = await _payment_credentials(request, record)
    if authorization is not None:
        if not authorization:
            raise await _payment_required(
                request,
                record,
                index,
                "Pay the invoice to get this chunk, then retry with "
                "Authorization: L402 <macaroon>:<preimage>.",
            )
        try:
            # Chunk tokens first: a download's repeated token is a cache hit there.
            token = s.tokens.verify(authorization, record.id, index)
        except l402.L402Error as exc:
            if l402.is_credit_authorization(authorization):
                return await _serve_with_credit(request, record, index, chunk, authorization)
            raise await _payment_required(request, record, index, f"token refused: {exc}") from None
        await s.tokens.note_paid(token.payment_hash)
    return await _serve(request, record, index, {}, _present(record, index, chunk))


# The most chunks one run may ask for (64 MiB at the default chunk size): more saves nothing.
MAX_RUN_CHUNKS = 64


async def get_chunk_run(request: web.Request) -> web.StreamResponse:
    s = services(request)
    first = int_param(request.query.get("first", ""), "first")
    last = int_param(request.query.get("last", ""), "last")
    if not first <= last < first + MAX_RUN_CHUNKS:
        raise bad_request(
            f"a run is 1 to {MAX_RUN_CHUNKS} chunks, first to last; got {first}-{last}"
        )
    record = await load_file(request)
    check_chunk_index(record, last)
    authorization = await _payment_credentials(request, record)
    if authorization is not None:
        count = last - first + 1
        if not authorization:
            raise await _payment_required(
                request, record, first, "Pay for the run's chunks first.", requested=count
            )
        try:
            # A token grants one contiguous range: holding both ends, it holds the run.
            token = s.tokens.verify(authorization, record.id, first)
            s.tokens.verify(authorization, record.id, last)
        except l402.L402Error as exc:
            raise await _payment_required(
                request, record, first, f"token refused: {exc}", requested=count
            ) from None
        await s.tokens.note_paid(token.payment_hash)
    chunks = await s.files.chunk_run(record.id, first, last)
    if len(chunks) != last - first + 1:  # complete files have every chunk: a broken record
        raise not_found(f"chunks {first}-{last} of {record.id} are not all recorded")
    headers = {"Cache-Control": "private, max-age=31536000", "Bitcache-Chunks": f"{first}-{last}"}
    response, sent = await stream_blocks(
        request, s.ipfs, [(c.cid, c.size) for c in chunks], headers
    )
    s.meter.add(record.id, sent)
    return response


async def _payment_credentials(request: web.Request, record: FileRecord) -> list[str] | None:
    """None if the file is served as it is (free, or asked for by its owner); else the
    Authorization values that may pay for it (L402; an account's Bearer is another matter),
    perhaps none. A file still being uploaded is served to nobody."""
    if not record.complete:
        raise conflict(f"file {record.id} is still being uploaded", "upload-incomplete")
    owner = await optional_account(request)
    if record.price_msat == 0 or (owner is not None and owner.id == record.owner_id):
        return None
    values = request.headers.getall("Authorization", [])
    return [v for v in values if not v.lower().startswith("bearer ")]


def _present(record: FileRecord, index: int, chunk: ChunkRecord | None) -> ChunkRecord:
    if chunk is None:  # complete files have every chunk; this is a broken record
        raise not_found(f"chunk {index} of {record.id} is missing")
    return chunk


async def _serve(
    request: web.Request,
    record: FileRecord,
    index: int,
    extra: dict[str, str],
    chunk: ChunkRecord,
    cat: asyncio.Task[CatSocket] | None = None,
) -> web.StreamResponse:
    s = services(request)
    headers = {"ETag": f'"{chunk.cid}"', "Cache-Control": "private, max-age=31536000", **extra}
    try:
        response, sent = await stream_block(request, s.ipfs, chunk.cid, chunk.size, headers, cat)
    except Problem as exc:
        # Storage failed after credit paid the range: the token still goes to the holder,
        # so a retry presents it rather than paying again.
        exc.headers.update(extra)
        raise
    s.meter.add(record.id, sent)  # written in batches (gateway/billing/metering.py)
    return response


async def _serve_with_credit(
    request: web.Request,
    record: FileRecord,
    index: int,
    found: ChunkRecord | None,
    authorization: list[str],
) -> web.StreamResponse:
    s = services(request)
    if request.method != "GET":  # HEAD is safe: it never spends
        raise await _payment_required(
            request, record, index, "credit is spent by GET only; HEAD spends nothing"
        )
    try:
        payment_hash = s.credit.verify(authorization, tenant_of(request).id)
    except l402.L402Error as exc:
        raise await _payment_required(
            request, record, index, f"credit token refused: {exc}"
        ) from None
    chunks = purchase_range(
        index,
        count_param(request),
        record.chunk_count,
        s.config.max_range_chunks,
        record.price_msat,
    )
    # The chunk's record before the debit (a broken one costs the buyer nothing), and its
    # storage connection opening while the debit is booked: a paid first byte waits for
    # the slower of the two, not for both.
    chunk = _present(record, index, found)
    cat = early_cat(request, s.ipfs, chunk.cid)
    try:
        bought = await s.credit.spend(payment_hash, record, chunks)
    except CreditRefused as exc:
        discard_cat(cat)
        raise await _payment_required(
            request,
            record,
            index,
            f"credit refused: {exc}; pay the invoice instead",
            credit_remaining_msat=exc.remaining_msat,
        ) from None
    except BaseException:
        discard_cat(cat)
        raise
    return await _serve(request, record, index, range_token_headers(bought), chunk, cat)


def range_token_headers(bought: RangeBought) -> dict[str, str]:
    """The chunk token credit bought, where the range ends, and what the credit has left."""
    return {
        "Bitcache-Token": bought.macaroon_b64,
        "Bitcache-Token-Chunks": f"{bought.chunks.first}-{bought.chunks.last}",
        "Bitcache-Token-Valid-Until": str(bought.valid_until),
        "Bitcache-Credit-Spent": str(bought.amount_msat),
        "Bitcache-Credit-Remaining": str(bought.remaining_msat),
        # The answer carries a credential: no cache keeps it.
        "Cache-Control": "private, no-store",
    }


def count_param(request: web.Request) -> int:
    """How many chunks to buy ahead (?count=N, default 1)."""
    return int_param(request.query.get("count", "1"), "count", minimum=1)


async def _payment_required(
    request: web.Request,
    record: FileRecord,
    index: int,
    detail: str,
    requested: int | None = None,
    **extra: Any,
) -> Problem:
    """402 with a challenge for chunks from ``index``: ``requested`` of them, else ?count=."""
    s = services(request)
    requested = requested or count_param(request)
    spend_invoice_allowance(request)
    chunks = purchase_range(
        index, requested, record.chunk_count, s.config.max_range_chunks, record.price_msat
    )
    node = s.nodes.settings_for(tenant_of(request))
    challenge = await s.tokens.challenge(
        record, chunks, s.nodes.client(node), node.invoice_expiry_s, await s.nodes.node_id(node)
    )
    return payment_required(
        detail,
        challenge.macaroon_b64,
        challenge.bolt11,
        price_msat=record.price_msat,
        amount_msat=challenge.amount_msat,
        first=chunks.first,
        count=chunks.count,
        valid_until=challenge.valid_until,
        **extra,
    )
