"""POST /v1/l402/preimage: the preimage for a token whose invoice was paid elsewhere.

A page whose user paid by scanning the QR code with a phone never sees the preimage. The
holder of the macaroon (proof: its signature is ours) gets it once LND says the invoice
is settled, and the same L402 token then works as if the page had paid itself.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import l402
from gateway.handlers.common import json_model
from gateway.problems import Problem, not_found
from gateway.services import services, tenant_of
from lightning.models import InvoiceState


class PreimageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    macaroon: str = Field(min_length=10, max_length=64 * 1024)


async def preimage(request: web.Request) -> web.Response:
    s = services(request)
    body = await json_model(request, PreimageBody)
    try:
        payment_hash = s.tokens.holder_payment_hash(body.macaroon)
    except l402.L402Error as exc:
        raise Problem(403, "not-our-token", "Not a token of this gateway", str(exc)) from exc
    row = await s.db.fetch_one(
        "SELECT tenant_id FROM invoices WHERE payment_hash = ?"
        " UNION ALL SELECT tenant_id FROM signup_payments WHERE payment_hash = ?",
        (payment_hash, payment_hash),
    )
    if row is None or row[0] != tenant_of(request).id:
        raise not_found("no invoice for this token here")
    lnd = s.nodes.for_tenant(tenant_of(request))
    # Pages poll this about once a second: concurrent polls share one LND call, and a
    # settled invoice (its preimage cannot change) is never looked up again.
    invoice = await s.invoice_states.get(
        payment_hash,
        lambda: lnd.lookup_invoice(payment_hash),
        final=lambda found: found.state == InvoiceState.SETTLED and found.preimage is not None,
    )
    if invoice.state != InvoiceState.SETTLED or invoice.preimage is None:
        return web.json_response(
            {"state": str(invoice.state), "detail": "not paid yet"},
            status=202,
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )
    await s.tokens.note_paid(payment_hash)
    return web.json_response(
        {"state": "settled", "preimage": invoice.preimage.hex()},
        headers={"Cache-Control": "no-store"},
    )
