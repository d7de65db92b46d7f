"""What every handler needs, built once at start-up and stored on the app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService
from gateway.billing.withdrawals import Withdrawals
from gateway.clock import Clock, system_clock
from gateway.config import GatewayConfig, TenantSettings
from gateway.http.middleware import TENANT
from gateway.http.ratelimit import RateLimiter
from gateway.maintenance.unpinner import Unpinner
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileStore
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from ipfs.store import BlockStore


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
    clock: Clock = system_clock


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def tenant_of(request: web.Request) -> TenantSettings:
    """The brand this request is for (set by the tenant middleware)."""
    return request[TENANT]


def client_address(request: web.Request) -> str:
    """The caller's IP; behind a trusted proxy, the first X-Forwarded-For hop."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if services(request).config.trust_forwarded_host and forwarded:
        return forwarded.split(",")[0].strip()
    return request.remote or "unknown"


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
