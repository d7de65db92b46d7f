"""POST /v1/l402/preimage: the preimage for a token whose invoice was paid elsewhere.

A page whose user paid by scanning the QR code with a phone never sees the preimage. The
holder of the macaroon (proof: its signature is ours) gets it once LND says the invoice
is settled, and the same L402 token then works as if the page had paid itself.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

import l402
from gateway.http.models import PreimageBody
from gateway.http.params import json_model
from gateway.http.problems import Problem, not_found
from gateway.persistence.invoices import tenant_of_invoice
from gateway.services import services, tenant_of
from lightning.models import InvoiceState


async def preimage(request: web.Request) -> web.Response:
    s = services(request)
    body = await json_model(request, PreimageBody)
    try:
        payment_hash = s.tokens.holder_payment_hash(body.macaroon)
    except l402.L402Error as exc:
        raise Problem(403, "not-our-token", "Not a token of this gateway", str(exc)) from exc
    if await tenant_of_invoice(s.db, payment_hash) != tenant_of(request).id:
        raise not_found("no invoice for this token here")
    invoice = await s.nodes.for_tenant(tenant_of(request)).lookup_invoice(payment_hash)
    # The node's word is not proof (a tenant runs its own node): the preimage is.
    proof = invoice.preimage
    if (
        invoice.state != InvoiceState.SETTLED
        or proof is None
        or hashlib.sha256(proof).digest() != payment_hash
    ):
        return web.json_response(
            {"state": str(invoice.state), "detail": "not paid yet"},
            status=202,
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )
    await s.tokens.note_paid(payment_hash)
    return web.json_response(
        {"state": "settled", "preimage": proof.hex()},
        headers={"Cache-Control": "no-store"},
    )
