"""GET a chunk: 402 with an L402 challenge until paid, then the ciphertext streamed from IPFS."""

from __future__ import annotations

from aiohttp import web

import l402
from gateway.billing.pricing import purchase_range
from gateway.http.auth import optional_account
from gateway.http.chunk_stream import stream_block
from gateway.http.params import (
    check_chunk_index,
    chunk_index_param,
    int_param,
    load_file,
    spend_invoice_allowance,
)
from gateway.http.problems import Problem, conflict, not_found, payment_required
from gateway.persistence.files import FileRecord
from gateway.services import services, tenant_of


async def get_chunk(request: web.Request) -> web.StreamResponse:
    s = services(request)
    index = chunk_index_param(request)
    count_param(request)  # malformed ?count= is a 400 even when the chunk is free or owned
    record = await load_file(request)
    check_chunk_index(record, index)
    if not record.complete:
        raise conflict(f"file {record.id} is still being uploaded", "upload-incomplete")
    owner = await optional_account(request)
    if record.price_msat > 0 and (owner is None or owner.id != record.owner_id):
        authorization = [
            v
            for v in request.headers.getall("Authorization", [])
            if not v.lower().startswith("bearer ")
        ]
        if not authorization:
            raise await _payment_required(
                request,
                record,
                index,
                "Pay the invoice to get this chunk, then retry with "
                "Authorization: L402 <macaroon>:<preimage>.",
            )
        try:
            token = s.tokens.verify(authorization, record.id, index)
        except l402.L402Error as exc:
            raise await _payment_required(request, record, index, f"token refused: {exc}") from None
        await s.tokens.note_paid(token.payment_hash)
    chunk = await s.files.chunk(record.id, index)
    if chunk is None:  # complete files have every chunk; this is a broken record
        raise not_found(f"chunk {index} of {record.id} is missing")
    response, sent = await stream_block(
        request,
        s.ipfs,
        chunk.cid,
        chunk.size,
        {"ETag": f'"{chunk.cid}"', "Cache-Control": "private, max-age=31536000"},
    )
    s.meter.add(record.id, sent)  # written in batches (gateway/billing/metering.py)
    return response


def count_param(request: web.Request) -> int:
    """How many chunks to buy ahead (?count=N, default 1)."""
    return int_param(request.query.get("count", "1"), "count", minimum=1)


async def _payment_required(
    request: web.Request, record: FileRecord, index: int, detail: str
) -> Problem:
    s = services(request)
    requested = count_param(request)
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
    )
