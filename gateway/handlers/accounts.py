"""Accounts: create, usage, plans (bought over Lightning), earnings and withdrawals."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from client.bolt11 import check_invoice, invoice_amount_msat
from gateway import l402, ledger
from gateway.accounts import Account
from gateway.auth import require_account, require_operator
from gateway.config import TenantSettings
from gateway.handlers.common import (
    json_model,
    spend_invoice_allowance,
    spend_signup_allowance,
)
from gateway.ledger_store import balance, totals
from gateway.problems import Problem, bad_request, not_found
from gateway.quota import SECONDS_PER_DAY, byte_seconds
from gateway.quota_store import limit_bytes, subscriptions
from gateway.services import Services, services, tenant_of
from gateway.signup import SignupRefused
from gateway.withdrawals import WithdrawalRefused


class BuyPlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan_id: str = Field(min_length=1, max_length=32)


class WithdrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invoice: str = Field(min_length=20, max_length=4096)


async def create_account(request: web.Request) -> web.Response:
    s = services(request)
    tenant = tenant_of(request)
    if tenant.signup_price_msat > 0:
        account, api_key = await _paid_signup(request, s, tenant)
    else:
        spend_signup_allowance(request)
        account, api_key = await s.accounts.create(tenant.id)
    return web.json_response(
        {
            "account_id": account.id,
            "api_key": api_key,
            "tenant": account.tenant_id,
            "note": "Store the API key now: it is shown only once.",
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def _paid_signup(
    request: web.Request, s: Services, tenant: TenantSettings
) -> tuple[Account, str]:
    """The account a paid signup token opens, or 402 with an invoice for one."""
    credentials = [
        v
        for v in request.headers.getall("Authorization", [])
        if not v.lower().startswith("bearer ")
    ]
    if not credentials:
        raise await _signup_required(
            request,
            s,
            tenant,
            "Opening an account here costs a payment: pay the invoice, then POST again "
            "with Authorization: L402 <macaroon>:<preimage>.",
        )
    try:
        payment_hash = s.signups.verify(credentials, tenant.id)
    except l402.L402Error as exc:
        raise await _signup_required(request, s, tenant, f"token refused: {exc}") from None
    try:
        return await s.signups.redeem(payment_hash, tenant.id)
    except SignupRefused as exc:
        raise Problem(exc.status, exc.slug, "Signup refused", str(exc)) from exc


async def _signup_required(
    request: web.Request, s: Services, tenant: TenantSettings, detail: str
) -> Problem:
    spend_signup_allowance(request)
    spend_invoice_allowance(request)
    node = s.nodes.settings_for(tenant)
    challenge = await s.signups.challenge(
        tenant.id,
        tenant.display_name,
        tenant.signup_price_msat,
        s.nodes.client(node),
        node.invoice_expiry_s,
    )
    return Problem(
        402,
        "payment-required",
        "Payment required",
        detail,
        headers={"Cache-Control": "no-store"},
        extra={
            "amount_msat": challenge.amount_msat,
            "valid_until": challenge.valid_until,
            "invoice": challenge.bolt11,
            "macaroon": challenge.macaroon_b64,
        },
        extra_headers=[
            ("WWW-Authenticate", value)
            for value in l402.format_challenge(challenge.macaroon_b64, challenge.bolt11)
        ],
    )


async def _files_usage(s: Services, account_id: str) -> list[dict[str, Any]]:
    now = int(time.time())
    rows = await s.db.fetch_all(
        "SELECT id, state, stored_bytes, created_at, deleted_at, bytes_served, chunks_sold,"
        " earned_msat FROM files WHERE owner_id = ? ORDER BY created_at",
        (account_id,),
    )
    return [
        {
            "file_id": r["id"],
            "state": r["state"],
            "bytes_stored": 0 if r["state"] == "deleted" else int(r["stored_bytes"]),
            "byte_days": byte_seconds(
                int(r["stored_bytes"]), int(r["created_at"]), int(r["deleted_at"] or now)
            )
            / SECONDS_PER_DAY,
            "bytes_served": int(r["bytes_served"]),
            "chunks_sold": int(r["chunks_sold"]),
            "earned_msat": int(r["earned_msat"]),
        }
        for r in rows
    ]


async def account_usage(s: Services, tenant: TenantSettings, account_id: str) -> dict[str, Any]:
    account = await s.accounts.get(account_id)
    assert account is not None
    now = int(time.time())
    subs = await subscriptions(s.db, account_id)
    files = await _files_usage(s, account_id)
    return {
        "account_id": account.id,
        "tenant": account.tenant_id,
        "used_bytes": account.used_bytes,
        "limit_bytes": await limit_bytes(s.db, tenant, account_id),
        "free_quota_bytes": tenant.free_quota_bytes,
        "plans": [
            {
                "plan_id": p.plan_id,
                "quota_bytes": p.quota_bytes,
                "starts_at": p.starts_at,
                "ends_at": p.ends_at,
                "active": p.starts_at <= now < p.ends_at,
            }
            for p in subs
            if p.ends_at > now
        ],
        "balance_msat": await balance(s.db, ledger.user_account(account_id)),
        "totals": {
            key: sum(f[key] for f in files)
            for key in ("bytes_stored", "byte_days", "bytes_served", "chunks_sold", "earned_msat")
        },
        "files": files,
    }


async def get_usage(request: web.Request) -> web.Response:
    account = await require_account(request)
    return web.json_response(await account_usage(services(request), tenant_of(request), account.id))


async def list_plans(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    return web.json_response({"plans": [p.model_dump() for p in tenant.plans]})


async def buy_plan(request: web.Request) -> web.Response:
    s = services(request)
    account = await require_account(request)
    body = await json_model(request, BuyPlanBody)
    tenant = tenant_of(request)
    plan = tenant.plan(body.plan_id)
    if plan is None:
        raise not_found(f"no plan {body.plan_id!r}; see GET /v1/plans")
    spend_invoice_allowance(request)
    node = s.nodes.settings_for(tenant)
    invoice = await s.nodes.client(node).create_invoice(
        plan.price_msat,
        f"{tenant.display_name} plan: {plan.name}",
        expiry_s=node.invoice_expiry_s,
    )
    async with s.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO plan_invoices (payment_hash, account_id, plan_id, amount_msat, bolt11,"
            " created_at, tenant_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                invoice.payment_hash,
                account.id,
                plan.id,
                plan.price_msat,
                invoice.bolt11,
                int(time.time()),
                tenant.id,
            ),
        )
    return web.json_response(
        {
            "plan": plan.model_dump(),
            "invoice": invoice.bolt11,
            "payment_hash": invoice.payment_hash.hex(),
            "amount_msat": plan.price_msat,
        },
        status=201,
    )


async def withdraw(request: web.Request) -> web.Response:
    s = services(request)
    account = await require_account(request)
    key = request.headers.get("Idempotency-Key", "").strip()
    if not 8 <= len(key) <= 128:
        raise bad_request(
            "send an Idempotency-Key header (8 to 128 characters) so a retried "
            "request cannot pay twice",
            "idempotency-key-required",
        )
    body = await json_model(request, WithdrawBody)
    invoice = await _checked_invoice(s, tenant_of(request), body.invoice)
    try:
        result = await s.withdrawals.request(account.id, tenant_of(request), invoice, key)
    except WithdrawalRefused as exc:
        status = 409 if exc.slug in ("insufficient-funds", "invoice-already-used") else 400
        raise Problem(status, exc.slug, "Withdrawal refused", str(exc)) from exc
    status = {"succeeded": 200, "failed": 402, "pending": 202}[result.state]
    return web.json_response(result.public(), status=status)


async def _checked_invoice(s: Services, tenant: TenantSettings, bolt11: str) -> str:
    """The invoice in canonical form, or 422 before any Lightning node sees it (a bad
    invoice string once went into an LND REST path unescaped)."""
    try:
        invoice_amount_msat(bolt11)  # bech32 alphabet, checksum and amount first: pure
        network = await s.nodes.for_tenant(tenant).network()
        invoice, _ = check_invoice(bolt11, network, require_amount=True)
    except ValueError as exc:
        raise Problem(422, "bad-invoice", "Not a payable invoice", str(exc)) from exc
    return invoice


async def get_withdrawal(request: web.Request) -> web.Response:
    s = services(request)
    account = await require_account(request)
    found = await s.withdrawals.get(account.id, request.match_info["withdrawal_id"])
    if found is None:
        raise not_found("no such withdrawal")
    return web.json_response(found.public())


async def operator_report(request: web.Request) -> web.Response:
    """Every tenant's accounts, operator takings and the ledger check (deployment-wide)."""
    require_operator(request)
    s = services(request)
    tenants = []
    for tenant in s.tenants.tenants:
        rows = await s.db.fetch_all(
            "SELECT id FROM accounts WHERE tenant_id = ? ORDER BY created_at", (tenant.id,)
        )
        accounts = [await account_usage(s, tenant, r[0]) for r in rows]
        for usage in accounts:
            usage.pop("files")
        tenants.append(
            {
                "tenant": tenant.id,
                "accounts": accounts,
                "fees_msat": await balance(s.db, f"{ledger.OPERATOR_FEES}:{tenant.id}"),
                "plans_msat": await balance(s.db, f"{ledger.OPERATOR_PLANS}:{tenant.id}"),
                "signups_msat": await balance(s.db, f"{ledger.OPERATOR_SIGNUPS}:{tenant.id}"),
            }
        )
    entries_sum, balances_sum = await totals(s.db)
    return web.json_response(
        {
            "tenants": tenants,
            "ledger": {
                "entries_sum_msat": entries_sum,
                "balances_sum_msat": balances_sum,
                "consistent": entries_sum == 0 and balances_sum == 0,
            },
        }
    )
