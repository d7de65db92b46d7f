"""Withdrawals across tenants and nodes, in-process: real SQLite, FakeNodes.

Faults that are hard to cause on regtest on demand: a connection lost just before or
just after LND sends a payment, a tenant moved to another node while a payout is out,
one tenant's node down while another's is up, and the clock past an invoice's expiry.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.billing import ledger
from gateway.billing.withdrawals import UNKNOWN_RELEASE_MARGIN_S, WithdrawalRefused, Withdrawals
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database, migrations
from gateway.persistence.ledger import balance, book, tenant_sum, totals
from gateway.persistence.sqlite import SqliteDatabase
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from lightning.errors import LightningUnavailable
from lightning.fake import FakeNetwork, FakeNode
from lightning.models import InvoiceState, Payment
from lightning.node import LightningNode

EARNED_MSAT = 9_000_000
FEE_MSAT = 300


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class FlakyNode(FakeNode):
    """A FakeNode whose connection can drop around a payment: ``lose`` = "before" (LND
    never got the request: it never heard of the payment) or "after" (it paid, and the
    answer was lost)."""

    lose: str | None = None

    async def pay_invoice(self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60) -> Payment:
        if self.lose == "before":
            raise LightningUnavailable("connection lost before the request reached LND")
        payment = await super().pay_invoice(bolt11, fee_limit_msat, timeout_s)
        if self.lose == "after":
            raise LightningUnavailable("connection lost before LND's answer arrived")
        return payment


def lnd(name: str, tmp_path: Path) -> LndSettings:
    return LndSettings(
        rest_url=f"https://{name}", tls_cert=tmp_path / f"{name}.cert", macaroon=tmp_path / name
    )


@dataclass
class World:
    tmp_path: Path
    clock: Clock
    db: Database
    nodes: dict[str, FlakyNode]  # by host name in the URL: gw, beta, beta2
    wallet: FakeNode  # a user's own wallet, where withdrawals are paid to
    lightning: LightningNodes
    users: dict[str, str]  # tenant id → an account of that tenant with earnings

    def config(self, beta_node: str = "beta") -> GatewayConfig:
        return GatewayConfig(
            data_dir=self.tmp_path,
            kubo_api_url="http://127.0.0.1:9",
            lnd=lnd("gw", self.tmp_path),
            tenants=[
                TenantSettings(id="alpha", hostnames=["alpha.test"]),
                TenantSettings(
                    id="beta", hostnames=["beta.test"], lnd=lnd(beta_node, self.tmp_path)
                ),
            ],
        )

    def withdrawals(self, beta_node: str = "beta") -> Withdrawals:
        registry = TenantRegistry(self.config(beta_node))
        return Withdrawals(self.db, self.lightning, registry, 50, 1_000, self.clock)

    def tenant(self, tenant_id: str) -> TenantSettings:
        found = TenantRegistry(self.config()).get(tenant_id)
        assert found is not None
        return found

    async def withdraw(self, tenant_id: str, amount: int, key: str, service: Withdrawals) -> str:
        invoice = await self.wallet.create_invoice(amount, "payout", expiry_s=3_600)
        result = await service.request(
            self.users[tenant_id], self.tenant(tenant_id), invoice.bolt11, key
        )
        return result.id

    async def state(self, withdrawal_id: str) -> str:
        row = await self.db.fetch_one(
            "SELECT state FROM withdrawals WHERE id = ?", (withdrawal_id,)
        )
        assert row is not None
        return str(row[0])

    async def balance_of(self, tenant_id: str) -> int:
        return await balance(self.db, ledger.user_account(self.users[tenant_id]))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = Clock()
    network = FakeNetwork()
    nodes = {
        name: FlakyNode(network, name, clock=clock, fee_msat=FEE_MSAT)
        for name in ("gw", "beta", "beta2")
    }
    wallet = FakeNode(network, "wallet", clock=clock)

    def connect(settings: LndSettings) -> LightningNode:
        return nodes[settings.rest_url.removeprefix("https://")]

    w = World(
        tmp_path,
        clock,
        SqliteDatabase(tmp_path / "gateway.sqlite3"),
        nodes,
        wallet,
        LightningNodes(lnd("gw", tmp_path), connect),
        {},
    )
    await w.db.open()
    for tenant_id in ("alpha", "beta"):
        account, _ = await AccountStore(w.db).create(tenant_id)
        w.users[tenant_id] = account.id
        async with w.db.transaction() as conn:  # earnings from a sale, as settlement books it
            sale = ledger.chunk_sale(os.urandom(32).hex(), account.id, EARNED_MSAT * 10 // 9, 1_000)
            await book(conn, ledger.for_tenant(sale, tenant_id))
    assert await w.balance_of("alpha") == await w.balance_of("beta") == EARNED_MSAT
    try:
        yield w
    finally:
        await w.db.close()


async def test_reconcile_asks_the_node_the_payout_went_through(world: World) -> None:
    """Beta's payout is sent through Beta's node, the answer is lost, and Beta then moves
    to another node: only the first node knows the payment succeeded."""
    world.nodes["beta"].lose = "after"
    withdrawal = await world.withdraw("beta", 1_000_000, "key-moved-01", world.withdrawals())
    assert await world.state(withdrawal) == "pending"
    moved = world.withdrawals(beta_node="beta2")  # the tenants file now names beta2
    assert await moved.reconcile() == 1
    assert await world.state(withdrawal) == "succeeded"
    assert await world.balance_of("beta") == EARNED_MSAT - 1_000_000 - FEE_MSAT


async def test_a_payment_unknown_to_lnd_is_held_until_its_invoice_expired(world: World) -> None:
    world.nodes["gw"].lose = "before"
    service = world.withdrawals()
    withdrawal = await world.withdraw("alpha", 1_000_000, "key-unknown-1", service)
    held = EARNED_MSAT - 1_000_000 - 5_000  # amount and the fee reserve (50 bps)
    assert await world.state(withdrawal) == "pending"
    assert await world.balance_of("alpha") == held
    # LND never heard of it, but until the invoice has expired (plus a margin) it could
    # still be sent (another process, a request in transit): the funds stay held.
    for seconds in (0, 3_600, 3_600 + UNKNOWN_RELEASE_MARGIN_S - 10):
        world.clock.now = 1_700_000_000.0 + seconds
        assert await service.reconcile() == 0
        assert await world.state(withdrawal) == "pending"
        assert await world.balance_of("alpha") == held
    world.clock.now = 1_700_000_000.0 + 3_600 + UNKNOWN_RELEASE_MARGIN_S + 1
    assert await service.reconcile() == 1
    assert await world.state(withdrawal) == "failed"
    assert await world.balance_of("alpha") == EARNED_MSAT
    assert await totals(world.db) == (0, 0)


async def test_the_same_key_with_another_invoice_is_refused(world: World) -> None:
    service = world.withdrawals()
    first = await world.withdraw("alpha", 1_000_000, "key-reused-01", service)
    with pytest.raises(WithdrawalRefused) as refused:
        await world.withdraw("alpha", 2_000_000, "key-reused-01", service)
    assert refused.value.slug == "idempotency-key-reused"
    assert await world.state(first) == "succeeded"
    assert await world.balance_of("alpha") == EARNED_MSAT - 1_000_000 - FEE_MSAT
    paid = [i for i in world.wallet.invoices() if i.state == InvoiceState.SETTLED]
    assert len(paid) == 1


async def test_each_tenants_books_sum_to_zero_after_payouts(world: World) -> None:
    service = world.withdrawals()
    await world.withdraw("alpha", 1_000_000, "key-books-a1", service)
    await world.withdraw("beta", 2_000_000, "key-books-b1", service)
    assert await tenant_sum(world.db, "alpha") == 0
    assert await tenant_sum(world.db, "beta") == 0
    assert await totals(world.db) == (0, 0)
    # Each tenant's outside world saw its own sales in and its own payouts out.
    for tenant_id, amount in (("alpha", 1_000_000), ("beta", 2_000_000)):
        outside = await balance(world.db, f"{ledger.LIGHTNING}:{tenant_id}")
        assert outside == -EARNED_MSAT * 10 // 9 + amount + FEE_MSAT
    assert await balance(world.db, ledger.LIGHTNING) == 0


async def test_one_tenants_node_down_does_not_stop_the_others(world: World) -> None:
    world.nodes["beta"].lose = world.nodes["gw"].lose = "after"
    service = world.withdrawals()
    beta = await world.withdraw("beta", 1_000_000, "key-down-b01", service)  # first in line
    alpha = await world.withdraw("alpha", 1_000_000, "key-down-a01", service)
    world.nodes["beta"].unavailable = True
    assert await service.reconcile() == 1
    assert (await world.state(beta), await world.state(alpha)) == ("pending", "succeeded")
    world.nodes["beta"].unavailable = False
    assert await service.reconcile() == 1
    assert await world.state(beta) == "succeeded"
    assert await totals(world.db) == (0, 0)


async def test_migration_moves_old_payouts_to_the_tenants_own_outside_world(tmp_path: Path) -> None:
    """Payouts booked before 007 went to the global outside world; 007 moves them to the
    tenant's own, so its books sum to zero, and leaves the whole ledger balanced."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        before = [(v, sql) for v, _, sql in migrations() if v < 7]
        for _, sql in before:
            conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {before[-1][0]}")
        conn.execute(
            "INSERT INTO accounts (id, tenant_id, api_key_hash, created_at)"
            " VALUES ('u1', 'beta', x'00', 0)"
        )
        conn.execute(
            "INSERT INTO withdrawals (id, account_id, idempotency_key, bolt11, payment_hash,"
            " amount_msat, fee_reserve_msat, fee_paid_msat, state, created_at, tenant_id)"
            " VALUES ('wd_1', 'u1', 'k', 'lnbcrt1', x'01', 1000, 100, 10, 'succeeded', 0, 'beta')"
        )
        legs = {
            (1, "chunk_sale", "ab" * 32): [("external:lightning:beta", -5000), ("user:u1", 5000)],
            (2, "withdrawal_hold", "wd_1"): [("user:u1", -1100), ("hold:withdrawal:wd_1", 1100)],
            (3, "withdrawal_settle", "wd_1"): [
                ("hold:withdrawal:wd_1", -1100),
                ("external:lightning", 1010),
                ("user:u1", 90),
            ],
        }
        sums: dict[str, int] = {}
        for (tx_id, kind, ref), entries in legs.items():
            conn.execute("INSERT INTO ledger_transactions VALUES (?, ?, ?, 0)", (tx_id, kind, ref))
            for account, amount in entries:
                conn.execute(
                    "INSERT INTO ledger_entries VALUES (?, ?, ?)", (tx_id, account, amount)
                )
                sums[account] = sums.get(account, 0) + amount
        conn.executemany("INSERT INTO balances VALUES (?, ?)", sums.items())
    db = SqliteDatabase(path)
    await db.open()
    try:
        assert await balance(db, "external:lightning:beta") == -5000 + 1010
        assert await balance(db, "external:lightning") == 0
        assert await tenant_sum(db, "beta") == 0
        assert await totals(db) == (0, 0)
    finally:
        await db.close()
