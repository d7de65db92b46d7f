"""A gateway for tests that use it only through its URL: in this process (`serve`), or,
with BITCACHE_TEST_GATEWAYS=N (N > 1; `make test-scale` sets 3), N gateway processes
with the same config behind a round-robin proxy, as production runs replicas.

The replicas share everything the config names (database, token secret, tenants file,
LND, kubo) and differ only in their port, so a token minted by one must be honoured by
all and every request may land on any of them. They count the proxy as one more trusted
proxy, so a test that sends X-Forwarded-For as a client behind its own proxies sees the
same client address either way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.config import GatewayConfig
from gateway.server import serve
from regtest.process import free_port
from tests.gateway_process import GatewayProcess
from tests.round_robin import RoundRobinProxy, round_robin

__all__ = ["GATEWAYS_ENV", "Replicas", "gateway_count", "replicas", "serve_gateway"]

GATEWAYS_ENV = "BITCACHE_TEST_GATEWAYS"


def gateway_count() -> int:
    """How many gateway processes a black-box test gets (1: one in-process gateway)."""
    value = os.environ.get(GATEWAYS_ENV, "1").strip() or "1"
    count = int(value)
    if not 1 <= count <= 16:
        raise ValueError(f"{GATEWAYS_ENV}={value}: expected 1 to 16")
    return count


@dataclass
class Replicas:
    """Gateway processes with one config and the proxy in front of them."""

    processes: list[GatewayProcess]
    proxy: RoundRobinProxy

    @property
    def url(self) -> str:
        return self.proxy.url


@asynccontextmanager
async def replicas(config: GatewayConfig, count: int) -> AsyncIterator[Replicas]:
    """``count`` gateway processes with ``config`` (each on a free port) behind a started
    round-robin proxy; every process is stopped (SIGTERM) when the block ends."""
    processes = [
        GatewayProcess(
            config.model_copy(
                update={"port": free_port(), "trusted_proxies": config.trusted_proxies + 1}
            ),
            name=f"gateway-{i}",
        )
        for i in range(count)
    ]
    try:
        # The first alone: it creates the database and the token secret the others read.
        await processes[0].start()
        await asyncio.gather(*(p.start() for p in processes[1:]))
        async with round_robin([p.url for p in processes]) as proxy:
            yield Replicas(processes, proxy)
    finally:
        await asyncio.gather(*(p.stop() for p in processes), return_exceptions=True)


@asynccontextmanager
async def serve_gateway(config: GatewayConfig) -> AsyncIterator[str]:
    """`gateway.server.serve(config)`, or its replicas behind a proxy when
    BITCACHE_TEST_GATEWAYS asks for more than one; yields the URL to use."""
    count = gateway_count()
    if count == 1:
        async with serve(config) as url:
            yield url
        return
    async with replicas(config, count) as group:
        yield group.url
