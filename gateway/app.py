"""The composition root: builds the gateway's aiohttp application from one GatewayConfig.

The one place that chooses implementations: LND's REST API for Lightning, kubo or an IPFS
Cluster for IPFS (by ``ipfs_backend``, through gateway/blockstores.py), the system clock.
Tests may pass others (a FakeNode connector, their own clock). The production clients
report their calls to the app's metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.billing.credit import CreditService
from gateway.billing.metered import MeteredSettlement
from gateway.billing.metering import ServedMeter
from gateway.billing.signup import Signups
from gateway.billing.stream_lease import StreamLease
from gateway.billing.tokens import TokenService, load_or_create_secret
from gateway.billing.watcher import WatcherPool
from gateway.billing.withdrawals import Withdrawals
from gateway.blockstores import open_block_store, tenant_stores
from gateway.clock import Clock, system_clock
from gateway.config import GatewayConfig, LndSettings
from gateway.http import flush
from gateway.http import metrics as http_metrics
from gateway.http.bodies import body_middleware
from gateway.http.cache import AnswerCache
from gateway.http.handlers import (
    accounts,
    chunks,
    credit,
    files,
    health,
    logins,
    pages,
    preimage,
    vault,
)
from gateway.http.middleware import problem_middleware, tenant_middleware
from gateway.http.openapi import serve_document
from gateway.http.ratelimit import RateLimiter
from gateway.identity import login
from gateway.maintenance.unpinner import Unpinner
from gateway.metrics import Metrics
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import open_database
from gateway.persistence.files import FileStore
from gateway.services import SERVICES, Services
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from ipfs.store import BlockStore
from lightning.lnd import LndRestClient
from lightning.node import LightningNode
from storage.crypto import CHUNK_OVERHEAD, MAX_CHUNK_SIZE

log = logging.getLogger("bitcache.gateway")

# A PUT carries one sealed chunk; the largest allowed plus headroom for JSON.
MAX_BODY_BYTES = MAX_CHUNK_SIZE + CHUNK_OVERHEAD + 64 * 1024
# Bytes served are written this often (and at shutdown), in one transaction.
METER_INTERVAL_S = 1.0


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
    connect: Callable[[LndSettings], LightningNode] | None = None,
    block_store: Callable[[str], BlockStore] | None = None,
    clock: Clock = system_clock,
) -> web.Application:
    """The gateway. ``connect`` makes a Lightning node's client from its settings,
    ``block_store`` the IPFS store from ``config.kubo_api_url``; by default LND's REST
    API and the store ``config.ipfs_backend`` names, both reporting to the app's metrics."""
    tenants = TenantRegistry(config)
    metrics = Metrics()  # this app's own registry: tests run many apps in one process

    def lnd(settings: LndSettings) -> LightningNode:
        return LndRestClient(
            settings.rest_url,
            settings.tls_cert,
            settings.macaroon,
            observe=metrics.lnd_observer(settings.rest_url),
        )

    def ipfs(_api_url: str) -> BlockStore:
        return open_block_store(config, observe=metrics.ipfs_observer())

    app = web.Application(
        middlewares=[
            http_metrics.metrics_middleware(metrics),
            problem_middleware(config.retry_after_s),
            tenant_middleware(tenants.for_host, config.trust_forwarded_host),
            body_middleware(
                config.max_buffered_body_bytes,
                MAX_BODY_BYTES,
                config.body_timeout_s,
                config.retry_after_s,
            ),
        ],
        client_max_size=MAX_BODY_BYTES,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        db = open_database(config.database, pool_size=config.database_pool_size)
        await db.open()
        nodes = LightningNodes(config.lnd, connect or lnd)
        store = (block_store or ipfs)(config.kubo_api_url)
        settlement = MeteredSettlement(db, tenants, metrics, clock)
        secret = load_or_create_secret(config.token_secret_path)
        tokens = TokenService(
            secret,
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
        file_store = FileStore(db)
        meter = ServedMeter(file_store.add_served)
        # The lease is measured in real seconds, whatever clock the money paths are given.
        lease = StreamLease(db, config.stream_lease_s, report=metrics.following)
        watchers = WatcherPool(
            settlement,
            db,
            tenants,
            nodes,
            config.retry_after_s,
            config.lnd_stream_idle_s,
            lease,
        )
        app[SERVICES] = Services(
            config,
            db,
            file_store,
            tokens,
            store,
            nodes,
            tenants,
            AccountStore(db),
            settlement,
            withdrawals,
            unpinner,
            RateLimiter(config.invoice_rate_per_s, config.invoice_burst),
            signups=Signups(db, secret, config.token_ttl_s, clock),
            signup_client_limiter=RateLimiter(
                config.signup_client_rate_per_s, config.signup_client_burst
            ),
            signup_tenant_limiter=RateLimiter(
                config.signup_tenant_rate_per_s, config.signup_tenant_burst
            ),
            health=AnswerCache(ttl_s=1.0),
            # Unpaid answers are not reused (a page polls right after paying), only shared.
            invoice_states=AnswerCache(ttl_s=0.0),
            login_client_limiter=RateLimiter(
                config.login_client_rate_per_s, config.login_client_burst
            ),
            login_user_limiter=RateLimiter(config.login_user_rate_per_s, config.login_user_burst),
            login_salt_key=login.salt_key(secret),
            meter=meter,
            credit=CreditService(
                secret,
                db,
                settlement,
                tokens,
                config.token_ttl_s,
                config.credit_ttl_s,
                config.credit_max_msat,
                clock,
            ),
            clock=clock,
            store_for=tenant_stores(store, config),
        )
        metering = asyncio.create_task(meter.run(METER_INTERVAL_S), name="metering")
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
            # After the last request (aiohttp runs this once they are done): the final flush.
            meter.stop()
            await asyncio.gather(metering, return_exceptions=True)
            await watchers.stop()
            await withdrawals.close()
            await store.close()
            await nodes.close()
            await db.close()

    app.cleanup_ctx.append(lifecycle)
    flush.install(app, config.shutdown_timeout_s)  # the last bytes out before exit
    app[http_metrics.METRICS] = metrics
    app.router.add_get(http_metrics.PATH, http_metrics.serve(metrics))  # not under /v1
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
    app.router.add_post("/v1/files/batch", files.create_batch)
    app.router.add_get("/v1/files/{file_id}", files.get_file)
    app.router.add_put("/v1/files/{file_id}/chunks/{index}", files.put_chunk)
    app.router.add_post("/v1/files/{file_id}/complete", files.complete_file)
    app.router.add_get("/v1/files/{file_id}/chunks/{index}", chunks.get_chunk)
    app.router.add_get("/v1/files/{file_id}/chunks", chunks.get_chunk_run)
    app.router.add_delete("/v1/files/{file_id}", files.delete_file)
    app.router.add_post("/v1/accounts", accounts.create_account)
    app.router.add_get("/v1/account", accounts.get_usage)
    app.router.add_post("/v1/login/salt", logins.login_salt)
    app.router.add_post("/v1/login", logins.login)
    app.router.add_get("/v1/plans", accounts.list_plans)
    app.router.add_post("/v1/account/plans", accounts.buy_plan)
    app.router.add_post("/v1/account/withdrawals", accounts.withdraw)
    app.router.add_get("/v1/account/withdrawals/{withdrawal_id}", accounts.get_withdrawal)
    app.router.add_get("/v1/operator/report", accounts.operator_report)
    app.router.add_post("/v1/l402/preimage", preimage.preimage)
    app.router.add_post("/v1/credit", credit.buy_credit)
    app.router.add_get("/v1/credit", credit.get_credit)
    app.router.add_get("/", pages.upload_page)
    app.router.add_get("/account", pages.account_page)
    app.router.add_get("/f/{file_id}", pages.share_page)
    app.router.add_get("/d/{file_id}", pages.share_page)  # a folder link (format §16)
    app.router.add_get("/vault", pages.vault_page)
    if pages.STATIC_DIR.is_dir():  # built by `make web`; pages say so when it is missing
        app.router.add_static("/static", pages.STATIC_DIR)
    return app
