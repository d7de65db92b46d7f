"""Running the gateway inside another program (the sandbox, tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.app import create_app
from gateway.config import GatewayConfig

# aiohttp's default access line less its own time stamp (%t: the log line has one, and
# formatting a second cost ~2% of the gateway's time serving chunks), plus the seconds
# each request took (%Tf).
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf "%{Referer}i" "%{User-Agent}i"'


@asynccontextmanager
async def serve(config: GatewayConfig) -> AsyncIterator[str]:
    """Serves the gateway on config.host:config.port until the block ends; yields its URL.

    Leaving the block refuses new connections at once, then waits up to
    ``config.shutdown_timeout_s`` for the requests in flight before the app is cleaned up."""
    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        shutdown_timeout=config.shutdown_timeout_s,
        # aiohttp closes a connection that has not sent a whole request head by then.
        keepalive_timeout=config.header_timeout_s,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        yield f"http://{config.host}:{config.port}"
    finally:
        await runner.cleanup()
