"""POST /v1/credit buys prepaid credit (402 with an L402 challenge); GET shows what is left.

Credit is spent on chunk requests (handlers/chunks.py): a chunk request presenting a paid
credit token is served after one debit of the range's price, with no Lightning payment
on its path.
"""

from __future__ import annotations

from aiohttp import web

import l402
from gateway.http.models import CreditBody
from gateway.http.params import json_model, spend_invoice_allowance
from gateway.http.problems import Problem, bad_request, payment_required
from gateway.services import services, tenant_of


def credit_authorization(request: web.Request) -> list[str]:
    """The request's L402 Authorization values (an account's Bearer key is not one)."""
    return [
        v
        for v in request.headers.getall("Authorization", [])
        if not v.lower().startswith("bearer ")
    ]


async def buy_credit(request: web.Request) -> web.Response:
    s = services(request)
    body = await json_model(request, CreditBody)
    tenant = tenant_of(request)
    if s.credit.max_msat <= 0:
        raise Problem(404, "no-credit", "No credit here", "this gateway sells no credit")
    if body.amount_msat > s.credit.max_msat:
        raise bad_request(
            f"amount_msat must be at most {s.credit.max_msat}", "credit-amount-too-large"
        )
    spend_invoice_allowance(request)
    node = s.nodes.settings_for(tenant)
    challenge = await s.credit.challenge(
        tenant.id,
        body.amount_msat,
        s.nodes.client(node),
        node.invoice_expiry_s,
        await s.nodes.node_id(node),
        tenant.display_name,
    )
    raise payment_required(
        "Pay the invoice; the macaroon with its preimage is then a credit token: present "
        "it as Authorization: L402 <macaroon>:<preimage> on chunk requests.",
        challenge.macaroon_b64,
        challenge.bolt11,
        amount_msat=challenge.amount_msat,
        valid_until=challenge.valid_until,
    )


async def get_credit(request: web.Request) -> web.Response:
    s = services(request)
    authorization = credit_authorization(request)
    if not authorization:
        raise Problem(
            401,
            "credit-token-required",
            "Credit token required",
            "send Authorization: L402 <credit macaroon>:<preimage>",
        )
    try:
        payment_hash = s.credit.verify(authorization, tenant_of(request).id)
    except l402.L402Error as exc:
        raise Problem(401, "credit-token-refused", "Credit token refused", str(exc)) from None
    state = await s.credit.state(payment_hash)
    if state is None:
        raise Problem(404, "not-found", "Not found", "no such credit here")
    return web.json_response(
        {
            "amount_msat": state.amount_msat,
            "remaining_msat": state.remaining_msat,
            "valid_until": state.expires_at,
            "state": state.state,
        },
        headers={"Cache-Control": "no-store"},
    )
