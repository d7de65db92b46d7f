"""The gateway on PostgreSQL, against real LND and kubo: what only a database server can
do. Runs in every set-up (on the session's PostgreSQL server, tests/conftest.py), so
`make test` covers it too; `make test-scale` runs the whole suite on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.server import serve
from regtest import postgres
from regtest.network import Network
from regtest.waiting import wait_until
from tests.conftest import gateway_config
from tests.support import TcpProxy, bearer, random_bytes, upload_raw

pytestmark = pytest.mark.integration

CHUNK = 4096


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fresh_database(server_url: str, name: str) -> str:
    await postgres.create_database(server_url, name)
    return await postgres.create_schema(postgres.database_url(server_url, name))


async def wait_for_database_health(
    session: aiohttp.ClientSession, gateway: str, ok: bool
) -> dict[str, object]:
    """/v1/health's body once its database check says ``ok``; 503 + Retry-After when not."""
    seen: dict[str, object] = {}

    async def reported() -> bool:
        async with session.get(f"{gateway}/v1/health") as resp:
            body, status, retry = await resp.json(), resp.status, resp.headers.get("Retry-After")
        if body["database"]["ok"] is not ok:
            return False
        assert status == (200 if ok else 503)  # only the database was down
        assert ok or retry == "5"
        seen.update(body)
        return True

    await wait_until(f"health to say the database ok={ok}", reported, 10, every_s=0.2)
    return seen


async def test_database_outage_gives_503_then_recovers(
    session: aiohttp.ClientSession, network: Network, postgres_server: str, tmp_path: Path
) -> None:
    url = await fresh_database(postgres_server, "outage")
    server = urlsplit(url)
    assert server.hostname is not None and server.port is not None
    proxy = TcpProxy(server.hostname, server.port)
    await proxy.start()
    through_proxy = url.replace(f":{server.port}/", f":{proxy.port}/", 1)
    config = gateway_config(network, tmp_path, database_url=through_proxy)
    assert config.uses_postgres
    try:
        async with serve(config) as gateway:
            up = await upload_raw(session, gateway, random_bytes(CHUNK), chunk_size=CHUNK)
            info = f"{gateway}/v1/files/{up.file_id}"
            await proxy.cut()  # the database server goes away, connections and all
            async with session.get(info) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "5"
                body = await resp.json()
                assert body["type"].endswith("dependency-unavailable")
                assert "Database" in body["title"]
            async with session.post(f"{gateway}/v1/accounts") as resp:
                assert resp.status == 503
            # /v1/health names the database (its answers may be a second old).
            health = await wait_for_database_health(session, gateway, ok=False)
            assert health["database"] == {"ok": False, "error": "unreachable"}
            await proxy.restore()
            health = await wait_for_database_health(session, gateway, ok=True)
            assert health["database"] == {"ok": True, "engine": "postgresql"}
            async with session.get(info) as resp:
                assert resp.status == 200
                assert (await resp.json())["state"] == "complete"
            async with session.post(f"{gateway}/v1/accounts") as resp:
                assert resp.status == 201
    finally:
        await proxy.cut()


async def test_two_gateways_on_one_database_share_accounts_and_files(
    session: aiohttp.ClientSession, network: Network, postgres_server: str, tmp_path: Path
) -> None:
    url = await fresh_database(postgres_server, "shared")
    first = gateway_config(network, tmp_path / "a", database_url=url)
    second = gateway_config(network, tmp_path / "b", database_url=url)
    async with serve(first) as a, serve(second) as b:
        up = await upload_raw(session, a, random_bytes(2 * CHUNK), chunk_size=CHUNK)
        async with session.get(f"{b}/v1/files/{up.file_id}") as resp:
            assert resp.status == 200
            assert (await resp.json())["chunk_count"] == 2
        async with session.get(f"{b}/v1/account", headers=bearer(up.api_key)) as resp:
            assert resp.status == 200
            assert (await resp.json())["used_bytes"] > 2 * CHUNK
