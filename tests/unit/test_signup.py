"""gateway.signup: the caveats of a signup token, and its ledger entry."""

from __future__ import annotations

import pytest

from gateway import ledger
from gateway.l402 import Caveat, TokenRejected, build_caveats
from gateway.signup import check_signup_caveats, signup_caveats


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
