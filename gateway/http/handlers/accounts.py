"""Accounts: create, usage, plans (bought over Lightning), earnings and withdrawals."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import l402
from gateway.billing import ledger
from gateway.billing.plans import sell_plan
from gateway.billing.quota import SECONDS_PER_DAY, byte_seconds
from gateway.billing.signup import SignupRefused
from gateway.billing.withdrawals import WithdrawalRefused
from gateway.config import TenantSettings
from gateway.http.auth import require_account, require_operator
from gateway.http.models import BuyPlanBody, CreateAccountBody, WithdrawBody
from gateway.http.params import json_model, spend_invoice_allowance, spend_signup_allowance
from gateway.http.problems import Problem, bad_request, not_found, payment_required
from gateway.identity import login, usernames
from gateway.persistence.accounts import Account, insert_account
from gateway.persistence.ledger import balance, tenant_sum, totals
from gateway.persistence.logins import NewLogin, UsernameTaken, attach
from gateway.persistence.quotas import free_bytes, limit_bytes, subscriptions
from gateway.services import Services, services, tenant_of
from lightning.bolt11 import check_invoice, invoice_amount_msat


async def _new_login(request: web.Request) -> NewLogin | None:
    """The optional username, login salt and proof of a new account (all three or none)."""
    if not request.body_exists or not (await request.read()).strip():
        return None
    body = await json_model(request, CreateAccountBody)
    given = [body.username is not None, body.proof is not None, body.login_salt is not None]
    if not any(given):
        return None
    if not all(given):
        raise Problem(
            422,
            "incomplete-login",
            "Incomplete login",
            "send username, login_salt and proof together (or none of them)",
        )
    assert body.username and body.proof and body.login_salt
    try:
        usernames.check(body.username)
    except usernames.InvalidUsername as exc:
        raise bad_request(str(exc), "bad-username") from exc
    return NewLogin(
        body.username,
        usernames.normalize(body.username),
        bytes.fromhex(body.login_salt),
        login.proof_hash(bytes.fromhex(body.proof)),
    )


def _taken(new_login: NewLogin) -> Problem:
    return Problem(
        409, "username-taken", "Username taken", "another account here has this username"
    )


async def create_account(request: web.Request) -> web.Response:
    s = services(request)
    tenant = tenant_of(request)
    new_login = await _new_login(request)
    try:
        if tenant.signup_price_msat > 0:
            account, api_key = await _paid_signup(request, s, tenant, new_login)
        else:
            spend_signup_allowance(request)
            async with s.db.transaction() as conn:
                account, api_key = await insert_account(conn, tenant.id)
                if new_login is not None:
                    await attach(conn, tenant.id, account.id, new_login)
    except UsernameTaken:
        assert new_login is not None
        raise _taken(new_login) from None
    return web.json_response(
        {
            "account_id": account.id,
            "api_key": api_key,
            "tenant": account.tenant_id,
            "username": new_login.username if new_login else None,
            "note": "Store the API key now: it is shown only once.",
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def _paid_signup(
    request: web.Request, s: Services, tenant: TenantSettings, new_login: NewLogin | None
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
        return await s.signups.redeem(payment_hash, tenant.id, new_login)
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
    return payment_required(
        detail,
        challenge.macaroon_b64,
        challenge.bolt11,
        amount_msat=challenge.amount_msat,
        valid_until=challenge.valid_until,
    )


async def _files_usage(s: Services, account_id: str, now: int) -> list[dict[str, Any]]:
    return [
        {
            "file_id": f.id,
            "state": f.state,
            "bytes_stored": 0 if f.state == "deleted" else f.stored_bytes,
            "byte_days": byte_seconds(f.stored_bytes, f.created_at, f.deleted_at or now)
            / SECONDS_PER_DAY,
            "bytes_served": f.bytes_served,
            "chunks_sold": f.chunks_sold,
            "earned_msat": f.earned_msat,
        }
        for f in await s.files.usage(account_id)
    ]


async def account_usage(s: Services, tenant: TenantSettings, account_id: str) -> dict[str, Any]:
    account = await s.accounts.get(account_id)
    assert account is not None
    now = int(s.clock())
    subs = await subscriptions(s.db, account_id)
    files = await _files_usage(s, account_id, now)
    return {
        "account_id": account.id,
        "tenant": account.tenant_id,
        "used_bytes": account.used_bytes,
        "limit_bytes": await limit_bytes(s.db, tenant, account_id, now),
        "free_quota_bytes": await free_bytes(s.db, tenant, account_id),
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
    invoice = await sell_plan(
        s.db,
        s.nodes.client(node),
        node.invoice_expiry_s,
        tenant,
        account.id,
        plan,
        s.clock,
        await s.nodes.node_id(node),
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


_REFUSAL_STATUS = {
    "insufficient-funds": 409,
    "invoice-already-used": 409,
    "idempotency-key-reused": 422,  # the same key with another body
}


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
        status = _REFUSAL_STATUS.get(exc.slug, 400)
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
        accounts = [
            await account_usage(s, tenant, account_id)
            for account_id in await s.accounts.ids_in_tenant(tenant.id)
        ]
        for usage in accounts:
            usage.pop("files")
        tenants.append(
            {
                "tenant": tenant.id,
                "accounts": accounts,
                "fees_msat": await balance(s.db, f"{ledger.OPERATOR_FEES}:{tenant.id}"),
                "plans_msat": await balance(s.db, f"{ledger.OPERATOR_PLANS}:{tenant.id}"),
                # Zero: each tenant's books stand on their own.
                "ledger_sum_msat": await tenant_sum(s.db, tenant.id),
                "signups_msat": await balance(s.db, f"{ledger.OPERATOR_SIGNUPS}:{tenant.id}"),
                "credit_owed_msat": await balance(s.db, f"{ledger.CREDIT}:{tenant.id}"),
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
