"""What every handler needs, built once at start-up and stored on the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.billing.credit import CreditService
from gateway.billing.metering import ServedMeter
from gateway.billing.settlement import Settlement
from gateway.billing.signup import Signups
from gateway.billing.tokens import TokenService
from gateway.billing.withdrawals import Withdrawals
from gateway.clock import Clock, system_clock
from gateway.config import GatewayConfig, TenantSettings
from gateway.http.cache import AnswerCache
from gateway.http.clientaddr import client_address as forwarded_client
from gateway.http.clientaddr import rate_key
from gateway.http.middleware import TENANT
from gateway.http.ratelimit import RateLimiter
from gateway.maintenance.unpinner import Unpinner
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileStore
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from ipfs.store import BlockStore
from lightning.models import Invoice


@dataclass
class Services:
    config: GatewayConfig
    db: Database
    files: FileStore
    tokens: TokenService
    ipfs: BlockStore
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
    # Login attempts per client address and per (tenant, normalised username).
    login_client_limiter: RateLimiter
    login_user_limiter: RateLimiter
    # Keys the login salt of names with none of their own (identity/login.py).
    login_salt_key: bytes
    meter: ServedMeter  # bytes served per file, written in batches
    credit: CreditService  # prepaid credit: sold, checked, spent on chunk ranges
    clock: Clock = system_clock
    # The store a tenant's uploads go to (on a cluster: with its replication); else ipfs.
    store_for: Callable[[TenantSettings], BlockStore] | None = None

    def ipfs_for(self, tenant: TenantSettings) -> BlockStore:
        return self.ipfs if self.store_for is None else self.store_for(tenant)


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
