"""Prepaid credit: its caveats, its ledger rules, and its spends on a real database (SQLite,
then PostgreSQL: tests/unit/conftest.py) with FakeNode instead of LND.

The same paths run against real LND on regtest in tests/integration/test_credit.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import l402
from gateway.billing import ledger
from gateway.billing.credit import CreditRefused, CreditService
from gateway.billing.credit_rules import CreditState, check_purchase, refusal
from gateway.billing.pricing import ChunkRange
from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService
from gateway.billing.watcher import InvoiceWatcher
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database, open_database
from gateway.persistence.files import FileRecord, FileStore
from gateway.persistence.invoices import Reporter
from gateway.persistence.ledger import balance, tenant_sum, totals
from gateway.tenants.registry import TenantRegistry
from l402.caveats import Caveat
from l402.macaroon import add_caveat, from_base64, to_base64
from lightning.fake import FakeNetwork, FakeNode
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, new_file_id, new_file_key

PRICE_MSAT = 2_000
TTL_S = 3_600
CREDIT_TTL_S = 86_400
FEE_BPS = 1_000  # the default tenant's operator fee: 10 %
NOW = 1_700_000_000
HASH = bytes(range(32))

# --- caveats (pure) -----------------------------------------------------------------------


def _caveats(macaroon: l402.Macaroon) -> list[Caveat]:
    return [l402.parse_caveat(raw) for raw in macaroon.caveats]


def test_credit_caveats_grant_the_tenant_until_expiry() -> None:
    caveats = l402.credit.credit_caveats("acme", NOW + 10)
    assert l402.check_credit_caveats(caveats, "acme", NOW) == NOW + 10
    with pytest.raises(l402.TokenRejected, match="another service"):
        l402.check_credit_caveats(caveats, "other", NOW)
    with pytest.raises(l402.TokenRejected, match="expired"):
        l402.check_credit_caveats(caveats, "acme", NOW + 10)


def test_credit_caveats_only_narrow() -> None:
    base = l402.credit.credit_caveats("acme", NOW + 10)
    later = [*base, Caveat(l402.COND_VALID_UNTIL, str(NOW + 100))]
    with pytest.raises(l402.TokenRejected, match="extends"):
        l402.check_credit_caveats(later, "acme", NOW)
    narrower = [*base, Caveat(l402.COND_VALID_UNTIL, str(NOW + 5))]
    assert l402.check_credit_caveats(narrower, "acme", NOW) == NOW + 5
    moved = [*base, Caveat(l402.COND_CREDIT, "other")]
    with pytest.raises(l402.TokenRejected, match="tenant"):
        l402.check_credit_caveats(moved, "other", NOW)


def test_credit_and_chunk_tokens_are_not_interchangeable() -> None:
    secret = os.urandom(32)
    credit = l402.mint_credit(secret, HASH, "acme", NOW + 100)
    chunk = l402.mint_token(secret, HASH, "file", 0, 3, NOW + 100)
    # A credit token names no file or chunk: the chunk check refuses it.
    with pytest.raises(l402.TokenRejected):
        l402.check_caveats(_caveats(credit), l402.AccessRequest("file", 0, NOW))
    # A chunk token is no credit, and narrowing a credit token to a file breaks it.
    with pytest.raises(l402.TokenRejected, match="not a credit"):
        l402.check_credit_caveats(_caveats(chunk), "acme", NOW)
    with_file = [*_caveats(credit), Caveat(l402.COND_FILE, "file")]
    with pytest.raises(l402.TokenRejected, match="not a credit"):
        l402.check_credit_caveats(with_file, "acme", NOW)
    assert l402.is_credit_macaroon(to_base64(credit))
    assert not l402.is_credit_macaroon(to_base64(chunk))
    assert not l402.is_credit_macaroon("not base64!")


def test_verify_credit_checks_payment_signature_and_tenant() -> None:
    secret, preimage = os.urandom(32), os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    credit = to_base64(l402.mint_credit(secret, payment_hash, "acme", NOW + 100))
    good = [f"L402 {credit}:{preimage.hex()}"]
    assert l402.is_credit_authorization(good)
    token, until = l402.verify_credit(good, secret, "acme", NOW)
    assert (token.payment_hash, until) == (payment_hash, NOW + 100)
    with pytest.raises(l402.TokenRejected, match="preimage"):
        l402.verify_credit([f"L402 {credit}:{'00' * 32}"], secret, "acme", NOW)
    with pytest.raises(l402.TokenRejected, match="signature"):
        l402.verify_credit(good, os.urandom(32), "acme", NOW)  # another gateway's secret
    with pytest.raises(l402.TokenRejected, match="another service"):
        l402.verify_credit(good, secret, "other", NOW)
    # A caveat added by the holder cannot widen, and one stripped breaks the signature.
    mac = from_base64(credit)
    widened = add_caveat(mac, f"{l402.COND_VALID_UNTIL}={NOW + 10**6}".encode())
    with pytest.raises(l402.TokenRejected, match="extends"):
        l402.verify_credit([f"L402 {to_base64(widened)}:{preimage.hex()}"], secret, "acme", NOW)
    stripped = l402.Macaroon(mac.location, mac.identifier, mac.caveats[:-1], mac.signature)
    with pytest.raises(l402.TokenRejected, match="signature"):
        l402.verify_credit([f"L402 {to_base64(stripped)}:{preimage.hex()}"], secret, "acme", NOW)


# --- ledger and spend rules (pure) ------------------------------------------------------


def test_credit_purchase_and_spend_balance_and_split_as_a_chunk_sale() -> None:
    h = HASH.hex()
    bought = ledger.credit_purchase(h, 10_000)
    assert sum(e.amount_msat for e in bought.entries) == 0
    spend = ledger.credit_spend(h, 1, "alice", 7 * 333, FEE_BPS)
    sale = ledger.chunk_sale(h, "alice", 7 * 333, FEE_BPS)
    assert sum(e.amount_msat for e in spend.entries) == 0
    assert spend.reference == f"{h}:1"
    assert {e.account: e.amount_msat for e in spend.entries if e.amount_msat > 0} == {
        e.account: e.amount_msat for e in sale.entries if e.amount_msat > 0
    }
    balances = ledger.apply(ledger.apply({}, bought), spend)
    assert balances[ledger.CREDIT] == 10_000 - 7 * 333
    # Spending more than the credit holds is refused by the ledger as well.
    with pytest.raises(ledger.InsufficientFunds):
        ledger.apply(balances, ledger.credit_spend(h, 2, "alice", 10_000, FEE_BPS))
    ownerless = ledger.credit_spend(h, 3, None, 500, FEE_BPS)
    assert {e.account: e.amount_msat for e in ownerless.entries} == {
        ledger.CREDIT: -500,
        ledger.OPERATOR_FEES: 500,
    }
    with pytest.raises(ledger.LedgerError):
        ledger.credit_spend(h, 0, "alice", 1, FEE_BPS)


def test_purchase_bounds_and_refusal_reasons() -> None:
    check_purchase(1, 10)
    check_purchase(10, 10)
    for bad in (0, 11, -1, True):
        with pytest.raises(ValueError):
            check_purchase(bad, 10)
    with pytest.raises(ValueError, match="no credit"):
        check_purchase(1, 0)
    paid = CreditState("acme", "settled", 10_000, 3_000, NOW + 10)
    assert "holds 3000 msat" in refusal(paid, "acme", 4_000, NOW)
    assert "expired" in refusal(paid, "acme", 1, NOW + 10)
    assert "no such credit" in refusal(paid, "other", 1, NOW)
    assert "no such credit" in refusal(None, "acme", 1, NOW)
    assert "not paid" in refusal(CreditState("acme", "open", 1, 0, NOW + 9), "acme", 1, NOW)


# --- spends on a database, both engines --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    clock: Clock
    node: FakeNode
    payer: FakeNode
    db: Database
    tenant: TenantSettings
    settlement: Settlement
    tokens: TokenService
    credit: CreditService
    secret: bytes
    owner: str
    file: FileRecord

    async def buy(self, amount_msat: int) -> tuple[bytes, list[str]]:
        """Buys and pays credit; its payment hash and its Authorization value."""
        challenge = await self.credit.challenge(
            self.tenant.id, amount_msat, self.node, 600, self.node.pubkey, "test"
        )
        payment = await self.payer.pay_invoice(challenge.bolt11, fee_limit_msat=1_000)
        authorization = [f"L402 {challenge.macaroon_b64}:{payment.preimage.hex()}"]
        return self.credit.verify(authorization, self.tenant.id), authorization


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
    db = open_database(database_location, pool_size=10)
    await db.open()
    tenants = TenantRegistry(config)
    secret = os.urandom(32)
    settlement = Settlement(db, tenants, clock)
    tokens = TokenService(secret, db, settlement, TTL_S, clock)
    credit = CreditService(secret, db, settlement, tokens, TTL_S, CREDIT_TTL_S, 10_000_000, clock)
    tenant = tenants.tenants[0]
    account, _ = await AccountStore(db).create(tenant.id)
    header = FileEncryptor(new_file_key(), new_file_id(), 100 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
    record, _ = await FileStore(db).create(
        header.header, os.urandom(64), PRICE_MSAT, account.id, 10**12, tenant.id
    )
    try:
        yield Gateway(
            clock, node, payer, db, tenant, settlement, tokens, credit, secret, account.id, record
        )
    finally:
        await db.close()


async def test_spend_pays_the_uploader_and_mints_a_range_token(gw: Gateway) -> None:
    payment_hash, authorization = await gw.buy(100_000)
    bought = await gw.credit.spend(payment_hash, gw.file, ChunkRange(0, 9))
    amount = 10 * PRICE_MSAT
    assert (bought.amount_msat, bought.remaining_msat) == (amount, 100_000 - amount)
    # The range token goes with the credit's own preimage.
    preimage = authorization[0].rsplit(":", 1)[1]
    range_auth = [f"L402 {bought.macaroon_b64}:{preimage}"]
    assert gw.tokens.verify(range_auth, gw.file.id, 9).payment_hash == payment_hash
    with pytest.raises(l402.TokenRejected, match="chunk"):
        gw.tokens.verify(range_auth, gw.file.id, 10)
    fee = amount * FEE_BPS // 10_000
    assert await balance(gw.db, ledger.user_account(gw.owner)) == amount - fee
    assert await balance(gw.db, f"{ledger.OPERATOR_FEES}:{gw.tenant.id}") == fee
    assert await balance(gw.db, f"{ledger.CREDIT}:{gw.tenant.id}") == 100_000 - amount
    assert await totals(gw.db) == (0, 0)
    assert await tenant_sum(gw.db, gw.tenant.id) == 0
    state = await gw.credit.state(payment_hash)
    assert state is not None and state.remaining_msat == 100_000 - amount


async def test_overspend_and_expiry_are_refused_without_spending(gw: Gateway) -> None:
    payment_hash, _ = await gw.buy(5 * PRICE_MSAT)
    with pytest.raises(CreditRefused, match="holds 10000 msat"):
        await gw.credit.spend(payment_hash, gw.file, ChunkRange(0, 5))
    await gw.credit.spend(payment_hash, gw.file, ChunkRange(0, 4))
    with pytest.raises(CreditRefused, match="holds 0 msat"):
        await gw.credit.spend(payment_hash, gw.file, ChunkRange(5, 5))
    second, _ = await gw.buy(5 * PRICE_MSAT)
    gw.clock.now += CREDIT_TTL_S
    with pytest.raises(CreditRefused, match="expired"):
        await gw.credit.spend(second, gw.file, ChunkRange(0, 0))
    assert await balance(gw.db, f"{ledger.CREDIT}:{gw.tenant.id}") == 5 * PRICE_MSAT


async def test_unpaid_credit_is_refused_before_any_spend(gw: Gateway) -> None:
    challenge = await gw.credit.challenge(gw.tenant.id, 10_000, gw.node, 600, "n", "test")
    with pytest.raises(l402.TokenRejected, match="preimage"):
        gw.credit.verify([f"L402 {challenge.macaroon_b64}:{'00' * 32}"], gw.tenant.id)
    payment_hash = l402.TokenId.decode(from_base64(challenge.macaroon_b64).identifier)
    state = await gw.db.fetch_one(
        "SELECT state, remaining_msat FROM credits WHERE payment_hash = ?",
        (payment_hash.payment_hash,),
    )
    assert state is not None and (state[0], state[1]) == ("open", 0)


async def test_credit_invoice_is_booked_once_by_proof_and_stream(gw: Gateway) -> None:
    payment_hash, _ = await gw.buy(50_000)
    await gw.credit.spend(payment_hash, gw.file, ChunkRange(0, 0))  # booked on proof
    watcher = InvoiceWatcher(gw.settlement, gw.db, gw.node, "https://gw", lambda: [gw.tenant.id], 1)
    assert await watcher.reconcile() == 0  # no longer open
    assert not await gw.settlement.book(payment_hash, 1, ":https://gw")
    rows = await gw.db.fetch_all(
        "SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'credit_purchase'"
    )
    assert int(rows[0][0]) == 1
    assert await balance(gw.db, f"{ledger.CREDIT}:{gw.tenant.id}") == 50_000 - PRICE_MSAT


async def test_concurrent_spends_never_overdraw(gw: Gateway) -> None:
    payment_hash, _ = await gw.buy(20 * PRICE_MSAT)
    await gw.credit.state(payment_hash)  # booked before the race

    async def one(i: int) -> bool:
        try:
            await gw.credit.spend(payment_hash, gw.file, ChunkRange(i, i + 2))
        except CreditRefused:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(results) == 6  # 3 chunks each, 20 chunks' worth: 6 spends, 2 chunks left
    state = await gw.credit.state(payment_hash)
    assert state is not None and state.remaining_msat == 2 * PRICE_MSAT
    assert await balance(gw.db, f"{ledger.CREDIT}:{gw.tenant.id}") == 2 * PRICE_MSAT
    assert await totals(gw.db) == (0, 0)


async def test_unpaid_credit_invoices_expire_and_are_still_booked_if_paid_in_time(
    gw: Gateway,
) -> None:
    challenge = await gw.credit.challenge(gw.tenant.id, 10_000, gw.node, 600, "n", "test")
    gw.clock.now += 600 + 3_600 + 1
    assert await gw.settlement.expire_stale() == 1
    payment_hash = l402.TokenId.decode(from_base64(challenge.macaroon_b64).identifier)
    # Settled in time after all (the stream reports it late): booked, spendable.
    assert await gw.settlement.book(payment_hash.payment_hash)
    state = await gw.credit.state(payment_hash.payment_hash)
    assert state is not None and (state.state, state.remaining_msat) == ("settled", 10_000)


async def test_only_the_issuing_node_books_a_credit_invoice(gw: Gateway) -> None:
    challenge = await gw.credit.challenge(
        gw.tenant.id, 10_000, gw.node, 600, gw.node.pubkey, "test"
    )
    payment_hash = l402.TokenId.decode(from_base64(challenge.macaroon_b64).identifier)
    h = payment_hash.payment_hash
    other = Reporter("02" + "ab" * 32, (gw.tenant.id,))
    assert not await gw.settlement.book(h, 7, ":other", other)  # another node's word
    mine = Reporter(gw.node.pubkey, (gw.tenant.id,))
    assert await gw.settlement.book(h, 8, ":mine", mine)
    assert not await gw.settlement.book(h)  # and the proof later: booked once
    assert await balance(gw.db, f"{ledger.CREDIT}:{gw.tenant.id}") == 10_000
