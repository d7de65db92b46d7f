"""Shared fixtures. The regtest network is started once per test session, on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from regtest.network import Network


@pytest.fixture(scope="session")
async def network() -> AsyncIterator[Network]:
    """btcd + LND `gateway` and `payer` with an active channel + kubo, all on 127.0.0.1."""
    async with Network.start() as net:
        yield net
