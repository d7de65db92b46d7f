"""LightningNodes: one client per distinct connection (URL, certificate and macaroon)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.billing.settlement import Settlement
from gateway.billing.watcher import InvoiceWatcher, WatcherPool
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.invoices import record_settle_index
from gateway.persistence.sqlite import SqliteDatabase
from gateway.tenants.nodes import LightningNodes, connection_key
from gateway.tenants.registry import TenantRegistry
from lightning.fake import FakeNode
from lightning.models import Invoice
from lightning.node import LightningNode

URL = "https://lnd.shared.test:8080"


def _nodes(tmp_path: Path) -> tuple[LightningNodes, list[LndSettings]]:
    made: list[LndSettings] = []

    def connect(settings: LndSettings) -> LightningNode:
        made.append(settings)
        return FakeNode(name=f"client {len(made)}")

    default = LndSettings(
        rest_url="https://gw", tls_cert=tmp_path / "gw.cert", macaroon=tmp_path / "gw.mac"
    )
    return LightningNodes(default, connect), made


def _tenant(tenant_id: str, cert: str, macaroon: str, tmp_path: Path) -> TenantSettings:
    lnd = LndSettings(rest_url=URL, tls_cert=tmp_path / cert, macaroon=tmp_path / macaroon)
    return TenantSettings(id=tenant_id, hostnames=[f"{tenant_id}.test"], lnd=lnd)


def test_two_tenants_on_one_url_keep_their_own_credentials(tmp_path: Path) -> None:
    nodes, made = _nodes(tmp_path)
    beta = _tenant("beta", "tls.cert", "beta.macaroon", tmp_path)
    gamma = _tenant("gamma", "tls.cert", "gamma.macaroon", tmp_path)
    delta = _tenant("delta", "other.cert", "beta.macaroon", tmp_path)
    clients = [nodes.for_tenant(t) for t in (beta, gamma, delta)]
    assert len({id(c) for c in clients}) == 3
    assert [s.macaroon.name for s in made] == ["beta.macaroon", "gamma.macaroon", "beta.macaroon"]
    assert [s.tls_cert.name for s in made] == ["tls.cert", "tls.cert", "other.cert"]


def test_the_same_connection_shares_one_client(tmp_path: Path) -> None:
    nodes, made = _nodes(tmp_path)
    beta = _tenant("beta", "tls.cert", "beta.macaroon", tmp_path)
    # The same connection with another invoice expiry is still the same node and client.
    assert beta.lnd is not None
    again = _tenant("again", "tls.cert", "beta.macaroon", tmp_path).model_copy(
        update={"lnd": beta.lnd.model_copy(update={"invoice_expiry_s": 120})}
    )
    assert nodes.for_tenant(beta) is nodes.for_tenant(again)
    assert nodes.for_tenant(None) is nodes.for_tenant(TenantSettings())  # the gateway's node
    assert len(made) == 2
    assert again.lnd is not None
    assert connection_key(beta.lnd) == connection_key(again.lnd)
    assert connection_key(beta.lnd) != connection_key(nodes.default)


async def test_the_watcher_pool_follows_each_connection_on_a_shared_url(tmp_path: Path) -> None:
    fakes: dict[str, FakeNode] = {}

    def connect(settings: LndSettings) -> LightningNode:
        return fakes.setdefault(Path(settings.macaroon).name, FakeNode(name=str(settings.macaroon)))

    tenants = [
        _tenant("beta", "tls.cert", "beta.macaroon", tmp_path),
        _tenant("gamma", "tls.cert", "gamma.macaroon", tmp_path),
    ]
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url=URL, tls_cert=tmp_path / "tls.cert", macaroon=tmp_path / "gw"),
        tenants=tenants,
    )
    db = SqliteDatabase(config.database_path)
    await db.open()
    registry = TenantRegistry(config)
    nodes = LightningNodes(config.lnd, connect)
    pool = WatcherPool(Settlement(db, registry), db, registry, nodes, 1)
    try:
        await pool.ensure()
        deadline = asyncio.get_running_loop().time() + 5
        # Each connection's node is followed: both have an open invoice subscription.
        while not all(f._subscribers for f in fakes.values()):  # the test peeks
            assert asyncio.get_running_loop().time() < deadline, "a connection is not watched"
            await asyncio.sleep(0.01)
        assert sorted(fakes) == ["beta.macaroon", "gamma.macaroon"]
    finally:
        await pool.stop()
        await db.close()


class RecordingNode(FakeNode):
    """Remembers the settle index each invoice subscription resumed from."""

    def __init__(self) -> None:
        super().__init__(name="recording")
        self.resumed_from: list[int] = []

    async def subscribe_invoices(
        self, add_index: int = 0, settle_index: int = 0, idle_s: float | None = None
    ) -> AsyncIterator[Invoice]:
        self.resumed_from.append(settle_index)
        async for invoice in super().subscribe_invoices(add_index, settle_index, idle_s):
            yield invoice


async def test_a_watcher_resumes_from_its_connections_index_or_the_old_urls(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase(tmp_path / "gateway.sqlite3")
    await db.open()
    settlement = Settlement(
        db,
        TenantRegistry(
            GatewayConfig(
                data_dir=tmp_path,
                kubo_api_url="http://127.0.0.1:9",
                lnd=LndSettings(rest_url=URL, tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
            )
        ),
    )

    async def resumed_from(connection: str) -> int:
        node = RecordingNode()
        watcher = InvoiceWatcher(settlement, db, node, URL, lambda: ["default"], 1, connection)
        task = asyncio.create_task(watcher.run())
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while not node.resumed_from:
                assert asyncio.get_running_loop().time() < deadline, "no subscription"
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return node.resumed_from[0]

    try:
        async with db.transaction() as conn:
            # Before connections were told apart, one watcher per URL read up to 40.
            await record_settle_index(conn, ":" + URL, 40)
        assert await resumed_from("beta-connection") == 40
        async with db.transaction() as conn:
            await record_settle_index(conn, ":beta-connection", 45)
        assert await resumed_from("beta-connection") == 45
        assert await resumed_from("gamma-connection") == 40
    finally:
        await db.close()
