"""Tokens, settlement and withdrawals in-process: a real database (SQLite, then
PostgreSQL: see tests/unit/conftest.py), FakeNode instead of LND.

The same paths run against real LND on regtest in tests/integration; these run in
milliseconds and can move the clock and make payments fail on demand.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import l402
from gateway.billing import ledger
from gateway.billing.plans import sell_plan
from gateway.billing.pricing import ChunkRange
from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService
from gateway.billing.watcher import InvoiceWatcher
from gateway.billing.withdrawals import WithdrawalRefused, Withdrawals
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database, open_database
from gateway.persistence.files import FileRecord, FileStore
from gateway.persistence.ledger import balance, totals
from gateway.persistence.quotas import limit_bytes, subscriptions
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from l402.macaroon import to_base64
from lightning.fake import FakeNetwork, FakeNode
from lightning.models import InvoiceState
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, new_file_id, new_file_key

PRICE_MSAT = 2_000_000  # per chunk
TTL_S = 3_600
INVOICE_EXPIRY_S = 600
FEE_BPS = 1_000  # the default tenant's operator fee: 10 %


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    clock: Clock
    node: FakeNode  # the gateway's node
    payer: FakeNode  # a customer's node on the same fake network
    db: Database
    tenant: TenantSettings
    settlement: Settlement
    tokens: TokenService
    withdrawals: Withdrawals
    owner: str  # the uploader's account id
    file: FileRecord

    async def earnings(self) -> int:
        return await balance(self.db, ledger.user_account(self.owner))

    async def sell(self, first: int = 0, last: int = 3) -> l402.Challenge:
        """A 402 challenge for chunks first..last, as the client would read it."""
        challenge = await self.tokens.challenge(
            self.file, ChunkRange(first, last), self.node, INVOICE_EXPIRY_S, self.node.pubkey
        )
        return l402.parse_challenge(l402.format_challenge(challenge.macaroon_b64, challenge.bolt11))


@pytest.fixture
async def gw(tmp_path: Path, database_location: str | Path) -> AsyncIterator[Gateway]:
    clock = Clock()
    network = FakeNetwork()
    node = FakeNode(network, "gateway", clock=clock, fee_msat=300)
    payer = FakeNode(network, "payer", clock=clock)
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
    )
    db = open_database(database_location)
    await db.open()
    tenants = TenantRegistry(config)
    nodes = LightningNodes(config.lnd, lambda _settings: node)
    settlement = Settlement(db, tenants, clock)
    tokens = TokenService(os.urandom(32), db, settlement, TTL_S, clock)
    withdrawals = Withdrawals(db, nodes, tenants, 50, 1_000, clock)
    tenant = tenants.tenants[0]
    account, _ = await AccountStore(db).create(tenant.id)
    header = FileEncryptor(new_file_key(), new_file_id(), 10 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
    record, _ = await FileStore(db).create(
        header.header, os.urandom(64), PRICE_MSAT, account.id, 10**12, tenant.id
    )
    try:
        yield Gateway(
            clock,
            node,
            payer,
            db,
            tenant,
            settlement,
            tokens,
            withdrawals,
            account.id,
            record,
        )
    finally:
        await db.close()


async def _pay(gw: Gateway, challenge: l402.Challenge) -> list[str]:
    """Pays the challenge's invoice from the payer's node; the Authorization value."""
    payment = await gw.payer.pay_invoice(challenge.invoice, fee_limit_msat=1_000)
    return [f"L402 {challenge.macaroon}:{payment.preimage.hex()}"]


async def test_minted_token_verifies_once_paid_and_only_for_its_range(gw: Gateway) -> None:
    challenge = await gw.sell(0, 3)
    assert challenge is not None
    unpaid = [f"L402 {challenge.macaroon}:{'00' * 32}"]
    with pytest.raises(l402.TokenRejected, match="preimage"):
        gw.tokens.verify(unpaid, gw.file.id, 0)

    authorization = await _pay(gw, challenge)
    token = gw.tokens.verify(authorization, gw.file.id, 3)
    invoice = await gw.node.lookup_invoice(token.payment_hash)
    assert invoice.state == InvoiceState.SETTLED
    assert invoice.amount_msat == 4 * PRICE_MSAT
    with pytest.raises(l402.TokenRejected, match="chunk"):
        gw.tokens.verify(authorization, gw.file.id, 4)
    with pytest.raises(l402.TokenRejected, match="file"):
        gw.tokens.verify(authorization, "another-file", 0)
    # The holder can prove the macaroon is ours; a foreign one is refused.
    assert gw.tokens.holder_payment_hash(challenge.macaroon) == token.payment_hash
    foreign = l402.mint_token(os.urandom(32), token.payment_hash, gw.file.id, 0, 3, 2**40)
    with pytest.raises(l402.TokenRejected):
        gw.tokens.holder_payment_hash(to_base64(foreign))


async def test_token_expiry_follows_the_injected_clock(gw: Gateway) -> None:
    challenge = await gw.sell(0, 0)
    assert challenge is not None
    authorization = await _pay(gw, challenge)
    gw.clock.now += TTL_S - 1
    gw.tokens.verify(authorization, gw.file.id, 0)
    gw.clock.now += 1
    with pytest.raises(l402.TokenRejected, match="expired"):
        gw.tokens.verify(authorization, gw.file.id, 0)


async def test_settled_invoice_is_booked_exactly_once(gw: Gateway) -> None:
    challenge = await gw.sell(0, 3)
    assert challenge is not None
    [settled] = [i for i in gw.node.invoices() if i.bolt11 == challenge.invoice]
    gw.node.settle(settled.payment_hash)  # paid from outside, e.g. a phone wallet
    watcher = InvoiceWatcher(gw.settlement, gw.db, gw.node, "https://gw", lambda: [gw.tenant.id], 1)
    assert await watcher.reconcile() == 1
    assert await watcher.reconcile() == 0  # no longer open
    # The download path and a replayed stream event see the same settlement: no-ops.
    await gw.tokens.note_paid(settled.payment_hash)
    assert not await gw.settlement.book(settled.payment_hash, 1, ":https://gw")

    sale = 4 * PRICE_MSAT
    assert await gw.earnings() == sale - sale * FEE_BPS // 10_000
    fees = await balance(gw.db, f"{ledger.OPERATOR_FEES}:{gw.tenant.id}")
    assert fees == sale * FEE_BPS // 10_000
    assert await totals(gw.db) == (0, 0)
    [usage] = await FileStore(gw.db).usage(gw.owner)
    assert (usage.chunks_sold, usage.earned_msat) == (4, await gw.earnings())


async def test_watcher_books_from_the_live_stream_and_resumes_after_it(gw: Gateway) -> None:
    watcher = InvoiceWatcher(gw.settlement, gw.db, gw.node, "https://gw", lambda: [gw.tenant.id], 1)
    task = asyncio.create_task(watcher.run())
    try:
        challenge = await gw.sell(0, 1)
        await _pay(gw, challenge)
        deadline = asyncio.get_running_loop().time() + 5
        while await gw.earnings() == 0:
            assert asyncio.get_running_loop().time() < deadline, "stream settlement not booked"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await gw.settlement.settle_index(":https://gw") == 1
    assert await gw.earnings() == 2 * PRICE_MSAT - 2 * PRICE_MSAT * FEE_BPS // 10_000


async def test_stale_invoices_expire_by_the_injected_clock(gw: Gateway) -> None:
    await gw.sell(0, 0)
    assert await gw.settlement.expire_stale() == 0
    gw.clock.now += INVOICE_EXPIRY_S + 3_600 + 1
    assert await gw.settlement.expire_stale() == 1


async def _earn(gw: Gateway) -> int:
    challenge = await gw.sell(0, 3)
    assert challenge is not None
    await _pay(gw, challenge)
    [paid] = [i for i in gw.node.invoices() if i.bolt11 == challenge.invoice]
    assert await gw.settlement.book(paid.payment_hash)
    return await gw.earnings()


async def test_withdrawal_paid_moves_amount_and_actual_fee(gw: Gateway) -> None:
    earned = await _earn(gw)
    invoice = await gw.payer.create_invoice(5_000_000, "withdraw")
    result = await gw.withdrawals.request(gw.owner, gw.tenant, invoice.bolt11, "key-00000001")
    assert result.state == "succeeded"
    assert result.fee_paid_msat == 300
    assert result.fee_reserve_msat == 25_000  # 50 bps of 5,000 sat, above the 1 sat floor
    assert (await gw.payer.lookup_invoice(invoice.payment_hash)).state == InvoiceState.SETTLED
    assert await gw.earnings() == earned - 5_000_000 - 300
    assert await totals(gw.db) == (0, 0)
    # The same idempotency key answers with the same withdrawal and pays nothing more.
    again = await gw.withdrawals.request(gw.owner, gw.tenant, invoice.bolt11, "key-00000001")
    assert again == result
    assert await gw.earnings() == earned - 5_000_000 - 300


async def test_withdrawal_failed_releases_the_hold(gw: Gateway) -> None:
    earned = await _earn(gw)
    invoice = await gw.payer.create_invoice(5_000_000, "withdraw")
    gw.node.fail_payments = "no route"
    result = await gw.withdrawals.request(gw.owner, gw.tenant, invoice.bolt11, "key-00000002")
    assert result.state == "failed"
    assert result.failure is not None and "no route" in result.failure
    assert await gw.earnings() == earned  # hold released in full
    assert (await gw.payer.lookup_invoice(invoice.payment_hash)).state == InvoiceState.OPEN
    assert await totals(gw.db) == (0, 0)
    assert await gw.withdrawals.reconcile() == 0  # nothing left pending


async def test_withdrawal_refuses_an_invoice_expiring_by_the_clock(gw: Gateway) -> None:
    await _earn(gw)
    invoice = await gw.payer.create_invoice(1_000_000, "withdraw", expiry_s=60)
    gw.clock.now += 55
    with pytest.raises(WithdrawalRefused, match="expired"):
        await gw.withdrawals.request(gw.owner, gw.tenant, invoice.bolt11, "key-00000003")


@pytest.mark.parametrize("change", ["terms changed", "plan removed"])
async def test_a_plan_is_honoured_as_sold_whatever_the_catalogue_says_later(
    gw: Gateway, tmp_path: Path, change: str
) -> None:
    sold = gw.tenant.plans[0]
    invoice = await sell_plan(
        gw.db, gw.node, INVOICE_EXPIRY_S, gw.tenant, gw.owner, sold, gw.clock, gw.node.pubkey
    )
    # The operator edits the catalogue before the buyer pays.
    changed = sold.model_copy(
        update={"quota_bytes": sold.quota_bytes // 10, "duration_s": 60, "price_msat": 1}
    )
    catalogue = [changed] if change == "terms changed" else []
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
        tenants=[gw.tenant.model_copy(update={"plans": catalogue})],
    )
    settlement = Settlement(gw.db, TenantRegistry(config), gw.clock)
    await gw.payer.pay_invoice(invoice.bolt11, fee_limit_msat=1_000)
    assert await settlement.book(invoice.payment_hash)

    now = int(gw.clock())
    [sub] = await subscriptions(gw.db, gw.owner)
    assert (sub.plan_id, sub.quota_bytes) == (sold.id, sold.quota_bytes)
    assert (sub.starts_at, sub.ends_at) == (now, now + sold.duration_s)
    plans_account = f"{ledger.OPERATOR_PLANS}:{gw.tenant.id}"
    assert await balance(gw.db, plans_account) == sold.price_msat
    assert await limit_bytes(gw.db, gw.tenant, gw.owner, now) == sold.quota_bytes
    assert await totals(gw.db) == (0, 0)
