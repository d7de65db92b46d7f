"""The composition root: builds the gateway's aiohttp application from one GatewayConfig.

The one place that chooses implementations: LND's REST API for Lightning, kubo for IPFS,
the system clock. Tests may pass others (a FakeNode connector, their own clock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService, load_or_create_secret
from gateway.billing.watcher import WatcherPool
from gateway.billing.withdrawals import Withdrawals
from gateway.clock import Clock, system_clock
from gateway.config import GatewayConfig, LndSettings
from gateway.http.handlers import accounts, chunks, files, health, pages, preimage, vault
from gateway.http.middleware import problem_middleware, tenant_middleware
from gateway.http.openapi import serve_document
from gateway.http.ratelimit import RateLimiter
from gateway.maintenance.unpinner import Unpinner
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileStore
from gateway.services import SERVICES, Services
from gateway.tenants.nodes import LightningNodes, lnd_rest
from gateway.tenants.registry import TenantRegistry
from ipfs.kubo import KuboClient
from ipfs.store import BlockStore
from lightning.node import LightningNode
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


def create_app(
    config: GatewayConfig,
    *,
    connect: Callable[[LndSettings], LightningNode] = lnd_rest,
    block_store: Callable[[str], BlockStore] = KuboClient,
    clock: Clock = system_clock,
) -> web.Application:
    """The gateway. ``connect`` makes a Lightning node's client from its settings,
    ``block_store`` the IPFS store from ``config.kubo_api_url``."""
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
        nodes = LightningNodes(config.lnd, connect)
        store = block_store(config.kubo_api_url)
        settlement = Settlement(db, tenants, clock)
        tokens = TokenService(
            load_or_create_secret(config.token_secret_path),
            db,
            settlement,
            config.token_ttl_s,
            clock,
        )
        withdrawals = Withdrawals(
            db,
            nodes,
            tenants,
            config.withdrawal_fee_limit_bps,
            config.withdrawal_min_fee_msat,
            clock,
            answer_within_s=config.withdrawal_answer_within_s,
        )
        unpinner = Unpinner(db, store)
        watchers = WatcherPool(
            settlement, db, tenants, nodes, config.retry_after_s, config.lnd_stream_idle_s
        )
        app[SERVICES] = Services(
            config,
            db,
            FileStore(db),
            tokens,
            store,
            nodes,
            tenants,
            AccountStore(db),
            settlement,
            withdrawals,
            unpinner,
            RateLimiter(config.invoice_rate_per_s, config.invoice_burst),
            clock,
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
            await store.close()
            await nodes.close()
            await db.close()

    app.cleanup_ctx.append(lifecycle)
    app[vault.NOTIFIER] = vault.VaultNotifier()
    app.router.add_get("/v1/vault", vault.get_vault)
    app.router.add_get("/v1/vault/keys/{name}", vault.get_key)
    app.router.add_put("/v1/vault/keys/{name}", vault.put_key)
    app.router.add_delete("/v1/vault/keys/{name}", vault.delete_key)
    app.router.add_get("/v1/vault/changes", vault.get_changes)
    app.router.add_post("/v1/vault/objects", vault.write_objects)
    app.router.add_get("/v1/health", health.health)
    app.router.add_get("/v1/openapi.json", serve_document)
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
