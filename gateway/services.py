"""What every handler needs, built once at start-up and stored on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.accounts import AccountStore
from gateway.cache import AnswerCache
from gateway.clientaddr import client_address as forwarded_client
from gateway.clientaddr import rate_key
from gateway.config import GatewayConfig, TenantSettings
from gateway.db import Database
from gateway.files import FileStore
from gateway.ratelimit import RateLimiter
from gateway.settlement import Settlement
from gateway.signup import Signups
from gateway.tenants import TENANT, LightningNodes, TenantRegistry
from gateway.tokens import TokenService
from gateway.unpinner import Unpinner
from gateway.withdrawals import Withdrawals
from lightning.models import Invoice
from storage.kubo import KuboClient


@dataclass
class Services:
    config: GatewayConfig
    db: Database
    files: FileStore
    tokens: TokenService
    kubo: KuboClient
    nodes: LightningNodes
    tenants: TenantRegistry
    accounts: AccountStore
    settlement: Settlement
    withdrawals: Withdrawals
    unpinner: Unpinner
    invoice_limiter: RateLimiter
    signups: Signups
    signup_client_limiter: RateLimiter
    signup_tenant_limiter: RateLimiter
    # At most one LND (and kubo) health check a second, whoever asks.
    health: AnswerCache[str, dict[str, Any]]
    # Invoice states by payment hash: settled ones kept for good; concurrent asks share.
    invoice_states: AnswerCache[bytes, Invoice]


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def tenant_of(request: web.Request) -> TenantSettings:
    """The brand this request is for (set by the tenant middleware)."""
    return request[TENANT]


def client_address(request: web.Request) -> str:
    """The caller's IP: the connection's, or behind `trusted_proxies` proxies the
    rightmost X-Forwarded-For hop they did not write (the ones left of it are the
    client's own say)."""
    return forwarded_client(
        request.remote,
        request.headers.getall("X-Forwarded-For", []),
        services(request).config.trusted_proxies,
    )


def client_key(request: web.Request) -> str:
    """Who a rate limit counts: the client's address, IPv6 by its /64."""
    return rate_key(client_address(request))


def price_default(request: web.Request) -> int:
    tenant = tenant_of(request)
    if tenant.default_price_msat is not None:
        return tenant.default_price_msat
    return services(request).config.default_price_msat


def public_base(request: web.Request) -> str:
    """Where this tenant's share links point: its public URL, else the deployment's,
    else the origin the request came in on."""
    public = tenant_of(request).public_url or services(request).config.public_url
    if public is not None:
        return str(public).rstrip("/")
    host = request.headers.get("Host") or request.host
    return f"{request.scheme}://{host}"
