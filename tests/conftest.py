"""Shared fixtures. The regtest network is started once per test session, on demand.

The set-up under test is chosen by environment variables, so that `make test-scale` runs
the same suite on the scale-out parts (each part adds its variable here):

- BITCACHE_TEST_DATABASE_URL: a PostgreSQL server (an admin URL; `python -m regtest.postgres
  run` sets it). Every test gateway gets a database of its own on it, instead of SQLite.
- BITCACHE_CLUSTER=1: the regtest network adds a 3-peer IPFS Cluster, and test gateways
  store in it (ipfs_backend "cluster", reading peer 0's kubo first).
- BITCACHE_TEST_GATEWAYS=N: `gateway_url` and the tests that use a gateway only through its
  URL (`serve_gateway`) get N gateway processes behind a round-robin proxy (tests/gateways.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from regtest import postgres
from regtest.network import Network
from regtest.process import free_port
from sandbox.run import sandbox_gateway_config
from tests.gateways import serve_gateway


@pytest.fixture(scope="session")
async def network() -> AsyncIterator[Network]:
    """btcd + LND `gateway` and `payer` with an active channel + kubo, all on 127.0.0.1,
    plus `router` and `far_payer` (routed payments with fees); with BITCACHE_CLUSTER=1
    (make test-scale) a 3-peer IPFS Cluster too."""
    cluster = os.environ.get("BITCACHE_CLUSTER") == "1"
    async with Network.start(router=True, cluster=cluster) as net:
        yield net


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """An admin URL of a PostgreSQL server: BITCACHE_TEST_DATABASE_URL's, or else one
    started for this session (installed from Debian's package if missing)."""
    url = os.environ.get(postgres.URL_ENV)
    if url:
        yield url
        return
    server = postgres.start()
    try:
        yield server.url()
    finally:
        server.stop()


def database_url_for(data_dir: Path) -> str | None:
    """The PostgreSQL database for a test gateway keeping its files in ``data_dir`` (the
    same one for the same dir, so a restarted gateway finds its data); None on SQLite."""
    server = os.environ.get(postgres.URL_ENV)
    if not server:
        return None
    name = "gw_" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:20]
    return postgres.run_sync(postgres.create_database(server, name))


def gateway_config(net: Network, data_dir: Path, **overrides: Any) -> GatewayConfig:
    """The sandbox's gateway config, on a free loopback port, on the database and block
    store under test. A test naming its own kubo_api_url (a proxy it injects faults into)
    gets the kubo backend on it."""
    if "database_url" not in overrides:
        overrides["database_url"] = database_url_for(data_dir)
    if net.cluster is not None and "kubo_api_url" not in overrides:
        overrides = net.cluster.gateway_settings() | overrides
    return sandbox_gateway_config(net, data_dir, free_port(), **overrides)


@pytest.fixture(scope="session")
async def gateway_url(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A gateway selling chunks at its default price, shared by the integration tests (with
    BITCACHE_TEST_GATEWAYS=N, N gateway processes behind a proxy)."""
    config = gateway_config(network, tmp_path_factory.mktemp("gateway"))
    async with serve_gateway(config) as url:
        yield url
