"""Shared fixtures. The regtest network is started once per test session, on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, LndSettings
from gateway.server import serve
from regtest.network import Network
from regtest.process import free_port


@pytest.fixture(scope="session")
async def network() -> AsyncIterator[Network]:
    """btcd + LND `gateway` and `payer` with an active channel + kubo, all on 127.0.0.1."""
    async with Network.start() as net:
        yield net


def gateway_config(net: Network, data_dir: Path, **overrides: Any) -> GatewayConfig:
    """A gateway on a free loopback port, using the network's `gateway` LND node and kubo."""
    node = net.node("gateway")
    assert net.kubo is not None
    values: dict[str, Any] = {
        "port": free_port(),
        "data_dir": data_dir,
        "kubo_api_url": net.kubo.api_url,
        "lnd": LndSettings(
            rest_url=node.rest_url, tls_cert=node.tls_cert, macaroon=node.admin_macaroon
        ),
    }
    return GatewayConfig(**(values | overrides))


@pytest.fixture(scope="session")
async def gateway_url(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A gateway selling chunks at its default price, shared by the integration tests."""
    config = gateway_config(network, tmp_path_factory.mktemp("gateway"))
    async with serve(config) as url:
        yield url
