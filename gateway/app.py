"""Builds the gateway's aiohttp application from one GatewayConfig."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.db import Database
from gateway.files import FileStore
from gateway.handlers import chunks, files, health, share
from gateway.problems import problem_middleware
from gateway.services import SERVICES, Services
from gateway.tokens import TokenService, load_or_create_secret
from lightning.lnd import LndRestClient
from storage.crypto import CHUNK_OVERHEAD, MAX_CHUNK_SIZE
from storage.kubo import KuboClient


def create_app(config: GatewayConfig) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware(config.retry_after_s)],
        # A PUT carries one sealed chunk; the largest allowed plus headroom for JSON.
        client_max_size=MAX_CHUNK_SIZE + CHUNK_OVERHEAD + 64 * 1024,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.database_path)
        await db.open()
        lnd = LndRestClient(config.lnd.rest_url, config.lnd.tls_cert, config.lnd.macaroon)
        kubo = KuboClient(config.kubo_api_url)
        tokens = TokenService(
            load_or_create_secret(config.token_secret_path),
            db,
            lnd,
            config.token_ttl_s,
            config.lnd.invoice_expiry_s,
        )
        app[SERVICES] = Services(config, db, FileStore(db), tokens, kubo, lnd)
        try:
            yield
        finally:
            await kubo.close()
            await lnd.close()
            await db.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/health", health.health)
    app.router.add_post("/v1/files", files.create_file)
    app.router.add_get("/v1/files/{file_id}", files.get_file)
    app.router.add_put("/v1/files/{file_id}/chunks/{index}", files.put_chunk)
    app.router.add_post("/v1/files/{file_id}/complete", files.complete_file)
    app.router.add_get("/v1/files/{file_id}/chunks/{index}", chunks.get_chunk)
    app.router.add_get("/f/{file_id}", share.share_page)
    return app
