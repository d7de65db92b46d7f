"""Money across tenants in-process: real SQLite, FakeNodes for the gateway's node and for
Beta's own node, which may lie (a tenant controls its node's REST endpoint).

Alpha sells through the gateway's node; Beta through its own. Nothing Beta's node says
may book Alpha's invoices, move Alpha's money or stop Alpha's books from closing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

import l402
from gateway.app import create_app
from gateway.billing import ledger
from gateway.billing.plans import sell_plan
from gateway.billing.pricing import ChunkRange
from gateway.billing.quota import Plan
from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService
from gateway.billing.watcher import WatcherPool
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileRecord, FileStore
from gateway.persistence.invoices import Reporter, add_chunk_invoice
from gateway.persistence.ledger import balance, totals
from gateway.persistence.quotas import subscriptions
from gateway.persistence.sqlite import SqliteDatabase
from gateway.tenants.nodes import LightningNodes, connection_key
from gateway.tenants.registry import TenantRegistry
from l402.macaroon import to_base64
from lightning.fake import FakeNetwork, FakeNode
from lightning.models import Invoice, InvoiceState, NodeInfo
from lightning.node import LightningNode
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, new_file_id, new_file_key

PRICE_MSAT = 2_000_000
PLAN = Plan(id="big", name="Big", quota_bytes=10**12, duration_s=3_600, price_msat=5_000_000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class LyingNode(FakeNode):
    """Beta's node, turned against Alpha: its stream reports each hash in ``claims`` as
    settled, its lookups say every invoice is settled, and it may claim another node's
    identity (``pretend_pubkey``)."""

    def __init__(self, network: FakeNetwork, pretend_pubkey: str | None = None) -> None:
        super().__init__(network, "beta")
        self.claims: list[bytes] = []
        self.pretend_pubkey = pretend_pubkey
        self.forged_preimage: bytes | None = None

    async def get_info(self) -> NodeInfo:
        info = await super().get_info()
        return replace(info, pubkey=self.pretend_pubkey or info.pubkey)

    def _settled(self, payment_hash: bytes, index: int) -> Invoice:
        return Invoice(
            payment_hash,
            "lnbcrt1",
            PRICE_MSAT,
            InvoiceState.SETTLED,
            1,
            index,
            PRICE_MSAT,
            self.forged_preimage,
        )

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice:
        return self._settled(payment_hash, 1)

    async def subscribe_invoices(
        self, add_index: int = 0, settle_index: int = 0, idle_s: float | None = None
    ) -> AsyncIterator[Invoice]:
        for index, payment_hash in enumerate(self.claims, start=1):
            if index > settle_index:
                yield self._settled(payment_hash, index)
        await asyncio.Event().wait()  # then silence, as a stream with nothing new


@dataclass
class Deployment:
    clock: Clock
    db: Database
    gateway_node: FakeNode
    beta_node: LyingNode
    nodes: LightningNodes
    tenants: TenantRegistry
    settlement: Settlement
    tokens: TokenService
    alpha: TenantSettings
    beta: TenantSettings
    alpha_owner: str
    alpha_file: FileRecord

    async def sell_alpha(self) -> tuple[bytes, bytes]:
        """An Alpha chunk invoice and an Alpha plan invoice, both on the gateway's node."""
        settings = self.nodes.settings_for(self.alpha)
        node_id = await self.nodes.node_id(settings)
        challenge = await self.tokens.challenge(
            self.alpha_file, ChunkRange(0, 0), self.gateway_node, 600, node_id
        )
        [chunk] = [i for i in self.gateway_node.invoices() if i.bolt11 == challenge.bolt11]
        plan = await sell_plan(
            self.db, self.gateway_node, 600, self.alpha, self.alpha_owner, PLAN, self.clock, node_id
        )
        return chunk.payment_hash, plan.payment_hash

    async def alpha_takings(self) -> tuple[int, int, int]:
        """(Alpha uploader's earnings, Alpha's plan takings, Alpha's subscriptions)."""
        return (
            await balance(self.db, ledger.user_account(self.alpha_owner)),
            await balance(self.db, f"{ledger.OPERATOR_PLANS}:alpha"),
            len(await subscriptions(self.db, self.alpha_owner)),
        )


async def _deployment(tmp_path: Path, pretend_pubkey: str | None) -> Deployment:
    clock = Clock()
    network = FakeNetwork()
    gateway_node = FakeNode(network, "gateway", clock=clock)
    beta_node = LyingNode(network, pretend_pubkey)
    beta_lnd = LndSettings(
        rest_url="https://beta-node", tls_cert=tmp_path / "b.cert", macaroon=tmp_path / "b.mac"
    )
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
        tenants=[
            TenantSettings(id="alpha", hostnames=["alpha.test"], plans=[PLAN]),
            TenantSettings(id="beta", hostnames=["beta.test"], lnd=beta_lnd, plans=[PLAN]),
        ],
    )

    def connect(settings: LndSettings) -> LightningNode:
        return beta_node if settings.rest_url == beta_lnd.rest_url else gateway_node

    db = SqliteDatabase(config.database_path)
    await db.open()
    tenants = TenantRegistry(config)
    settlement = Settlement(db, tenants, clock)
    tokens = TokenService(os.urandom(32), db, settlement, 3_600, clock)
    alpha, beta = tenants.tenants
    account, _ = await AccountStore(db).create("alpha")
    header = FileEncryptor(new_file_key(), new_file_id(), 4 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
    record, _ = await FileStore(db).create(
        header.header, os.urandom(64), PRICE_MSAT, account.id, 10**12, "alpha"
    )
    return Deployment(
        clock,
        db,
        gateway_node,
        beta_node,
        LightningNodes(config.lnd, connect),
        tenants,
        settlement,
        tokens,
        alpha,
        beta,
        account.id,
        record,
    )


@pytest.fixture(params=[None, "claims the gateway node's pubkey"], ids=["own-id", "stolen-id"])
async def dep(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployment]:
    pretend = None if request.param is None else FakeNode(name="gateway").pubkey
    d = await _deployment(tmp_path, pretend)
    try:
        yield d
    finally:
        await d.db.close()


async def _wait_for(what: str, condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_tenants_node_cannot_settle_another_tenants_invoices(dep: Deployment) -> None:
    chunk_hash, plan_hash = await dep.sell_alpha()
    dep.beta_node.claims = [chunk_hash, plan_hash]
    pool = WatcherPool(dep.settlement, dep.db, dep.tenants, dep.nodes, 1)
    beta_key = ":" + connection_key(dep.nodes.settings_for(dep.beta))
    try:
        await pool.ensure()

        async def both_claims_heard() -> bool:
            return await dep.settlement.settle_index(beta_key) == 2

        # Beta's stream has delivered both claims (its settle index moved past them) …
        await _wait_for("Beta's stream to be read", both_claims_heard)
        # … and nothing of Alpha's was booked: no earnings, no plan money, no plan.
        assert await dep.alpha_takings() == (0, 0, 0)
        # The honest way still works: Alpha's own node settles, Alpha's watcher books.
        dep.gateway_node.settle(chunk_hash)
        dep.gateway_node.settle(plan_hash)

        async def booked() -> bool:
            return (await dep.alpha_takings())[2] == 1 and (await dep.alpha_takings())[0] > 0

        await _wait_for("Alpha's own node's settlements", booked)
        assert await dep.alpha_takings() == (PRICE_MSAT * 9 // 10, PLAN.price_msat, 1)
    finally:
        await pool.stop()


async def test_a_direct_claim_by_another_tenants_node_books_nothing(dep: Deployment) -> None:
    """The same, without the pool: Beta's node as the reporter of Alpha's invoices."""
    chunk_hash, plan_hash = await dep.sell_alpha()
    beta_id = await dep.nodes.node_id(dep.nodes.settings_for(dep.beta))
    beta_reporter = Reporter(beta_id, ("beta",))
    for payment_hash in (chunk_hash, plan_hash):
        assert not await dep.settlement.book(payment_hash, 7, ":beta", beta_reporter)
    assert await dep.alpha_takings() == (0, 0, 0)
    # A preimage is proof, whoever brings it: the download path still books.
    assert await dep.settlement.book(chunk_hash)


async def test_the_preimage_endpoint_wants_proof_not_the_nodes_word(tmp_path: Path) -> None:
    """POST /v1/l402/preimage books a sale when the node hands over the preimage: one
    that does not hash to the payment hash is a lie, and nothing is booked."""
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
    )
    secret = os.urandom(32)
    config.token_secret_path.write_bytes(secret)
    db = SqliteDatabase(config.database_path)
    await db.open()
    try:
        account, _ = await AccountStore(db).create("default")
        header = FileEncryptor(new_file_key(), new_file_id(), MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
        record, _ = await FileStore(db).create(
            header.header, os.urandom(64), PRICE_MSAT, account.id, 10**12, "default"
        )
        payment_hash = os.urandom(32)
        async with db.transaction() as conn:
            await add_chunk_invoice(
                conn, payment_hash, record.id, 0, 0, PRICE_MSAT, "lnbcrt1", 0, 2**40, "default", "x"
            )
    finally:
        await db.close()
    liar = LyingNode(FakeNetwork())
    liar.forged_preimage = b"\x01" * 32
    macaroon = to_base64(l402.mint_token(secret, payment_hash, record.id, 0, 0, 2**40))
    app = create_app(config, connect=lambda _settings: liar)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        async with session.post(
            server.make_url("/v1/l402/preimage"), json={"macaroon": macaroon}
        ) as resp:
            assert resp.status == 202, await resp.text()
    db = SqliteDatabase(config.database_path)
    await db.open()
    try:
        assert await balance(db, ledger.user_account(account.id)) == 0
        assert await totals(db) == (0, 0)
    finally:
        await db.close()
