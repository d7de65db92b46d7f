"""gateway.billing.signup: the caveats of a signup token, its ledger entry, and a paid
signup end to end on a FakeNode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.billing import ledger
from gateway.billing.signup import SignupRefused, Signups, check_signup_caveats, signup_caveats
from gateway.persistence.accounts import AccountStore
from gateway.persistence.ledger import balance, tenant_sum, totals
from gateway.persistence.sqlite import SqliteDatabase
from l402 import Caveat, TokenRejected, build_caveats
from lightning.fake import FakeNetwork, FakeNode


def test_a_fresh_token_for_this_tenant_passes() -> None:
    check_signup_caveats(signup_caveats("acme", 2_000), "acme", 1_000)


def test_refusals() -> None:
    good = signup_caveats("acme", 2_000)
    cases = {
        "other tenant": (good, "globex", 1_000),
        "expired": (good, "acme", 2_000),
        "chunk token": (build_caveats("f" * 26, 0, 3, 2_000), "acme", 1_000),
        "narrowed to downloads": (
            [*good, Caveat("services", "bitcache:0")],
            "acme",
            1_000,
        ),
        "a later tenant caveat": ([*good, Caveat("bitcache-signup_tenant", "x")], "acme", 1_000),
        "unknown signup caveat": ([*good, Caveat("bitcache-signup_plan", "x")], "acme", 1_000),
        "no expiry": (good[:2], "acme", 1_000),
        "bad expiry": ([*good[:2], Caveat("bitcache-signup_valid_until", "²")], "acme", 1_000),
    }
    for name, (caveats, tenant, now) in cases.items():
        with pytest.raises(TokenRejected):
            check_signup_caveats(caveats, tenant, now)
        assert name


def test_the_payment_is_the_operators_and_stays_in_the_tenants_books() -> None:
    tx = ledger.for_tenant(ledger.signup_payment("ab" * 32, 5_000), "acme")
    assert tx.kind == ledger.KIND_SIGNUP
    assert {e.account: e.amount_msat for e in tx.entries} == {
        "external:lightning:acme": -5_000,
        "operator:signups:acme": 5_000,
    }
    assert "operator:signups:acme" in ledger.tenant_house_accounts("acme")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_paid_signup_opens_one_account_and_keeps_the_tenants_books_at_zero(
    tmp_path: Path,
) -> None:
    """The whole path on a FakeNode: challenge, payment, one account per payment, the
    payment booked inside the tenant's own books, expiry by the injected clock."""
    clock, network = _Clock(), FakeNetwork()
    node = FakeNode(network, "gateway", clock=clock)
    payer = FakeNode(network, "payer", clock=clock)
    db = SqliteDatabase(tmp_path / "gateway.sqlite3")
    await db.open()
    try:
        signups = Signups(db, os.urandom(32), 600, clock)
        challenge = await signups.challenge("acme", "Acme", 5_000, node, 600)
        unpaid = [f"L402 {challenge.macaroon_b64}:{'00' * 32}"]
        with pytest.raises(TokenRejected, match="preimage"):
            signups.verify(unpaid, "acme")
        payment = await payer.pay_invoice(challenge.bolt11, fee_limit_msat=1_000)
        paid = [f"L402 {challenge.macaroon_b64}:{payment.preimage.hex()}"]
        with pytest.raises(TokenRejected):
            signups.verify(paid, "globex")
        payment_hash = signups.verify(paid, "acme")

        account, api_key = await signups.redeem(payment_hash, "acme")
        assert account.tenant_id == "acme" and api_key.startswith("bck_")
        with pytest.raises(SignupRefused) as used:
            await signups.redeem(payment_hash, "acme")
        assert (used.value.status, used.value.slug) == (409, "signup-token-used")
        with pytest.raises(SignupRefused) as foreign:
            await signups.redeem(payment_hash, "globex")
        assert foreign.value.status == 403
        # The refused redemptions opened nothing: one account, the one paid for.
        assert await AccountStore(db).get(account.id) is not None
        rows = await db.fetch_all("SELECT id FROM accounts")
        assert [r[0] for r in rows] == [account.id]

        assert await balance(db, f"{ledger.OPERATOR_SIGNUPS}:acme") == 5_000
        assert await tenant_sum(db, "acme") == 0
        assert await totals(db) == (0, 0)

        clock.now += 600
        with pytest.raises(TokenRejected, match="expired"):
            signups.verify(paid, "acme")
    finally:
        await db.close()
