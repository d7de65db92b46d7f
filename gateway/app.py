"""Builds the gateway's aiohttp application from one GatewayConfig."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.billing.settlement import Settlement, WatcherPool
from gateway.billing.tokens import TokenService, load_or_create_secret
from gateway.billing.withdrawals import Withdrawals
from gateway.config import GatewayConfig
from gateway.http.handlers import accounts, chunks, files, health, pages, preimage
from gateway.http.problems import problem_middleware
from gateway.http.ratelimit import RateLimiter
from gateway.maintenance.unpinner import Unpinner
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileStore
from gateway.services import SERVICES, Services
from gateway.tenants.registry import LightningNodes, TenantRegistry, tenant_middleware
from ipfs.kubo import KuboClient
from storage.crypto import CHUNK_OVERHEAD, MAX_CHUNK_SIZE

log = logging.getLogger("bitcache.gateway")


async def _every(interval_s: float, *jobs: Callable[[], Awaitable[object]]) -> None:
    """Runs each job now and then every interval; a failing job is logged and retried."""
    while True:
        for job in jobs:
            try:
                await job()
            except Exception:  # a background job must never die: it is the retry
                log.exception("background job %s failed", getattr(job, "__qualname__", job))
        await asyncio.sleep(interval_s)


def create_app(config: GatewayConfig) -> web.Application:
    tenants = TenantRegistry(config)
    app = web.Application(
        middlewares=[
            problem_middleware(config.retry_after_s),
            tenant_middleware(tenants.for_host, config.trust_forwarded_host),
        ],
        # A PUT carries one sealed chunk; the largest allowed plus headroom for JSON.
        client_max_size=MAX_CHUNK_SIZE + CHUNK_OVERHEAD + 64 * 1024,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.database_path)
        await db.open()
        nodes = LightningNodes(config.lnd)
        kubo = KuboClient(config.kubo_api_url)
        settlement = Settlement(db, tenants)
        tokens = TokenService(
            load_or_create_secret(config.token_secret_path), db, settlement, config.token_ttl_s
        )
        withdrawals = Withdrawals(
            db,
            nodes,
            tenants,
            config.withdrawal_fee_limit_bps,
            config.withdrawal_min_fee_msat,
            config.withdrawal_answer_within_s,
        )
        unpinner = Unpinner(db, kubo)
        watchers = WatcherPool(
            settlement, db, tenants, nodes, config.retry_after_s, config.lnd_stream_idle_s
        )
        app[SERVICES] = Services(
            config,
            db,
            FileStore(db),
            tokens,
            kubo,
            nodes,
            tenants,
            AccountStore(db),
            settlement,
            withdrawals,
            unpinner,
            RateLimiter(config.invoice_rate_per_s, config.invoice_burst),
        )
        maintenance = asyncio.create_task(
            _every(
                config.maintenance_interval_s,
                watchers.ensure,
                withdrawals.reconcile,
                unpinner.drain,
                settlement.expire_stale,
            ),
            name="maintenance",
        )
        try:
            yield
        finally:
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
            await watchers.stop()
            await withdrawals.close()
            await kubo.close()
            await nodes.close()
            await db.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/health", health.health)
    app.router.add_post("/v1/files", files.create_file)
    app.router.add_get("/v1/files/{file_id}", files.get_file)
    app.router.add_put("/v1/files/{file_id}/chunks/{index}", files.put_chunk)
    app.router.add_post("/v1/files/{file_id}/complete", files.complete_file)
    app.router.add_get("/v1/files/{file_id}/chunks/{index}", chunks.get_chunk)
    app.router.add_delete("/v1/files/{file_id}", files.delete_file)
    app.router.add_post("/v1/accounts", accounts.create_account)
    app.router.add_get("/v1/account", accounts.get_usage)
    app.router.add_get("/v1/plans", accounts.list_plans)
    app.router.add_post("/v1/account/plans", accounts.buy_plan)
    app.router.add_post("/v1/account/withdrawals", accounts.withdraw)
    app.router.add_get("/v1/account/withdrawals/{withdrawal_id}", accounts.get_withdrawal)
    app.router.add_get("/v1/operator/report", accounts.operator_report)
    app.router.add_post("/v1/l402/preimage", preimage.preimage)
    app.router.add_get("/", pages.upload_page)
    app.router.add_get("/account", pages.account_page)
    app.router.add_get("/f/{file_id}", pages.share_page)
    if pages.STATIC_DIR.is_dir():  # built by `make web`; pages say so when it is missing
        app.router.add_static("/static", pages.STATIC_DIR)
    return app
