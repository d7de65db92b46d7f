"""Who is calling: an account's API key (Bearer), or the operator's token."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.http.problems import Problem
from gateway.persistence.accounts import Account
from gateway.services import services, tenant_of


def bearer_token(request: web.Request) -> str | None:
    for value in request.headers.getall("Authorization", []):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="bitcache"'},
    )


async def optional_account(request: web.Request) -> Account | None:
    token = bearer_token(request)
    if token is None:
        return None
    account = await services(request).accounts.by_api_key(token)
    if account is None or account.tenant_id != tenant_of(request).id:
        raise _unauthorized("unknown API key")
    return account


async def require_account(request: web.Request) -> Account:
    account = await optional_account(request)
    if account is None:
        raise _unauthorized(
            "this needs an account: send Authorization: Bearer <API key> "
            "(create one with POST /v1/accounts)"
        )
    return account


def require_operator(request: web.Request) -> None:
    expected = services(request).config.operator_token
    token = bearer_token(request)
    if expected is None:
        raise Problem(404, "not-found", "Not found", "the operator report is not enabled")
    if token is None or not hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        raise _unauthorized("operator token required")
