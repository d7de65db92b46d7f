"""Tests for gateway.billing.ledger: transaction rules, builders, apply() and the fee reserve."""

from __future__ import annotations

import dataclasses
import random
from types import MappingProxyType

import pytest

from gateway.billing.ledger import (
    LIGHTNING,
    OPERATOR_FEES,
    OPERATOR_PLANS,
    Entry,
    InsufficientFunds,
    LedgerError,
    Transaction,
    apply,
    chunk_sale,
    fee_reserve_msat,
    plan_purchase,
    user_account,
    withdrawal_hold,
    withdrawal_hold_account,
    withdrawal_release,
    withdrawal_settle,
)

HASH = "ab" * 32
ALICE = user_account("alice")
HOLD = withdrawal_hold_account("w1")


def amounts(tx: Transaction) -> dict[str, int]:
    return {e.account: e.amount_msat for e in tx.entries}


def total(tx: Transaction) -> int:
    return sum(e.amount_msat for e in tx.entries)


# --- Transaction validation ---------------------------------------------------------------


def test_account_names() -> None:
    assert user_account("alice") == "user:alice"
    assert withdrawal_hold_account("w1") == "hold:withdrawal:w1"
    with pytest.raises(LedgerError):
        user_account("")
    with pytest.raises(LedgerError):
        withdrawal_hold_account(" w1")


def test_valid_transaction() -> None:
    tx = Transaction("k", "r", (Entry("a", -5), Entry("b", 3), Entry("c", 2)))
    assert total(tx) == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        tx.kind = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "entries",
    [
        (),
        (Entry("a", 0),),
        (Entry("a", -1), Entry("b", 2)),  # does not balance
        (Entry("a", -1), Entry("b", 1), Entry("c", 0)),  # zero leg
        (Entry("a", -2), Entry("a", 1), Entry("b", 1)),  # account twice
        (Entry("a", -1), Entry("b", True)),  # bool is not an amount
        (Entry("a", -1.0), Entry("b", 1.0)),  # type: ignore[arg-type]  # floats never
        (Entry("", -1), Entry("b", 1)),
    ],
)
def test_invalid_transactions_rejected(entries: tuple[Entry, ...]) -> None:
    with pytest.raises(LedgerError):
        Transaction("k", "r", entries)


def test_single_entry_rejected_even_when_zero_sum_is_impossible() -> None:
    with pytest.raises(LedgerError, match="two entries"):
        Transaction("k", "r", (Entry("a", 1),))


def test_entries_must_be_a_tuple() -> None:
    with pytest.raises(LedgerError):
        Transaction("k", "r", [Entry("a", -1), Entry("b", 1)])  # type: ignore[arg-type]


# --- chunk_sale ---------------------------------------------------------------------------


def test_chunk_sale_splits_fee_and_earnings() -> None:
    tx = chunk_sale(HASH, "alice", 10_000, 250)
    assert tx.kind == "chunk_sale"
    assert tx.reference == HASH
    assert amounts(tx) == {LIGHTNING: -10_000, OPERATOR_FEES: 250, ALICE: 9_750}


def test_chunk_sale_fee_floors_in_uploader_favour() -> None:
    # 999 * 250 / 10_000 = 24.975 -> the operator gets 24, the uploader 975.
    assert amounts(chunk_sale(HASH, "alice", 999, 250)) == {
        LIGHTNING: -999,
        OPERATOR_FEES: 24,
        ALICE: 975,
    }


def test_chunk_sale_tiny_amount_has_no_fee_leg() -> None:
    # 39 * 250 / 10_000 < 1: no fee at all, and no zero entry.
    assert amounts(chunk_sale(HASH, "alice", 39, 250)) == {LIGHTNING: -39, ALICE: 39}
    assert amounts(chunk_sale(HASH, "alice", 1_000, 0)) == {LIGHTNING: -1_000, ALICE: 1_000}


def test_chunk_sale_full_fee_has_no_user_leg() -> None:
    assert amounts(chunk_sale(HASH, "alice", 1_000, 10_000)) == {
        LIGHTNING: -1_000,
        OPERATOR_FEES: 1_000,
    }


def test_chunk_sale_normalises_hash_case() -> None:
    assert chunk_sale(HASH.upper(), "alice", 1, 0).reference == HASH


@pytest.mark.parametrize(
    ("payment_hash", "amount", "fee_bps"),
    [
        (HASH, 0, 100),
        (HASH, -5, 100),
        (HASH, True, 100),
        (HASH, 100, -1),
        (HASH, 100, 10_001),
        ("ab" * 31, 100, 100),
        ("zz" * 32, 100, 100),
    ],
)
def test_chunk_sale_rejects_bad_input(payment_hash: str, amount: int, fee_bps: int) -> None:
    with pytest.raises(LedgerError):
        chunk_sale(payment_hash, "alice", amount, fee_bps)


# --- plan_purchase ------------------------------------------------------------------------


def test_plan_purchase() -> None:
    tx = plan_purchase(HASH, 50_000)
    assert tx.kind == "plan_purchase"
    assert amounts(tx) == {LIGHTNING: -50_000, OPERATOR_PLANS: 50_000}
    with pytest.raises(LedgerError):
        plan_purchase(HASH, 0)


# --- withdrawals --------------------------------------------------------------------------


def test_withdrawal_hold() -> None:
    tx = withdrawal_hold("w1", "alice", 100_000, 1_000)
    assert tx.reference == "w1"
    assert amounts(tx) == {ALICE: -101_000, HOLD: 101_000}


def test_withdrawal_settle_returns_unused_reserve() -> None:
    tx = withdrawal_settle("w1", "alice", 100_000, 1_000, 300)
    assert amounts(tx) == {HOLD: -101_000, LIGHTNING: 100_300, ALICE: 700}


def test_withdrawal_settle_using_whole_reserve_has_no_user_leg() -> None:
    tx = withdrawal_settle("w1", "alice", 100_000, 1_000, 1_000)
    assert amounts(tx) == {HOLD: -101_000, LIGHTNING: 101_000}


def test_withdrawal_settle_refuses_fee_above_reserve() -> None:
    with pytest.raises(LedgerError, match="exceeds the reserve"):
        withdrawal_settle("w1", "alice", 100_000, 1_000, 1_001)
    with pytest.raises(LedgerError):
        withdrawal_settle("w1", "alice", 100_000, 1_000, -1)


def test_withdrawal_release() -> None:
    tx = withdrawal_release("w1", "alice", 100_000, 1_000)
    assert amounts(tx) == {HOLD: -101_000, ALICE: 101_000}


# --- every builder balances, over many random inputs --------------------------------------


def test_builders_always_balance() -> None:
    rng = random.Random(20240601)
    for _ in range(2_000):
        amount = rng.choice([1, 2, 9_999, 10_000, 10_001, rng.randrange(1, 10**15)])
        fee_bps = rng.choice([0, 1, 9_999, 10_000, rng.randrange(0, 10_001)])
        reserve = rng.randrange(0, 10**9)
        fee_paid = rng.randrange(0, reserve + 1)

        sale = chunk_sale(HASH, "alice", amount, fee_bps)
        fee = amounts(sale).get(OPERATOR_FEES, 0)
        assert total(sale) == 0
        assert fee == amount * fee_bps // 10_000
        assert fee * 10_000 <= amount * fee_bps < (fee + 1) * 10_000  # floor, exactly
        assert all(e.amount_msat != 0 for e in sale.entries)

        for tx in (
            plan_purchase(HASH, amount),
            withdrawal_hold("w1", "alice", amount, reserve),
            withdrawal_settle("w1", "alice", amount, reserve, fee_paid),
            withdrawal_release("w1", "alice", amount, reserve),
        ):
            assert total(tx) == 0
            assert len(tx.entries) >= 2


# --- apply --------------------------------------------------------------------------------


def test_apply_returns_new_balances_and_leaves_input_alone() -> None:
    before = {ALICE: 500}
    after = apply(before, chunk_sale(HASH, "alice", 1_000, 1_000))
    assert before == {ALICE: 500}
    assert after == {ALICE: 1_400, OPERATOR_FEES: 100, LIGHTNING: -1_000}


def test_apply_refuses_overdraw_and_changes_nothing() -> None:
    before = {ALICE: 100_999}
    with pytest.raises(InsufficientFunds) as caught:
        apply(before, withdrawal_hold("w1", "alice", 100_000, 1_000))
    assert (caught.value.account, caught.value.balance, caught.value.needed) == (
        ALICE,
        100_999,
        101_000,
    )
    assert isinstance(caught.value, LedgerError)
    assert before == {ALICE: 100_999}


def test_apply_works_on_read_only_mapping() -> None:
    frozen = MappingProxyType({ALICE: 10})
    assert apply(frozen, withdrawal_hold("w1", "alice", 10, 0)) == {ALICE: 0, HOLD: 10}


def test_apply_allows_exact_drain() -> None:
    assert apply({ALICE: 101_000}, withdrawal_hold("w1", "alice", 100_000, 1_000))[ALICE] == 0


def test_apply_refuses_overdrawn_operator_account() -> None:
    tx = Transaction("refund", "r", (Entry(OPERATOR_FEES, -1), Entry(ALICE, 1)))
    with pytest.raises(InsufficientFunds):
        apply({}, tx)


def test_apply_lets_lightning_go_negative() -> None:
    balances = apply({}, plan_purchase(HASH, 7))
    assert balances == {LIGHTNING: -7, OPERATOR_PLANS: 7}


def test_hold_then_settle_costs_exactly_amount_plus_fee_paid() -> None:
    start = {ALICE: 200_000}
    held = apply(start, withdrawal_hold("w1", "alice", 100_000, 1_000))
    assert held[ALICE] == 99_000
    done = apply(held, withdrawal_settle("w1", "alice", 100_000, 1_000, 321))
    assert done[ALICE] == 200_000 - 100_000 - 321
    assert done[HOLD] == 0
    assert done[LIGHTNING] == 100_321
    assert sum(done.values()) == sum(start.values())  # money is conserved


def test_hold_then_release_leaves_user_unchanged() -> None:
    start = {ALICE: 200_000}
    held = apply(start, withdrawal_hold("w1", "alice", 100_000, 1_000))
    done = apply(held, withdrawal_release("w1", "alice", 100_000, 1_000))
    assert done[ALICE] == 200_000
    assert done[HOLD] == 0


def test_settle_or_release_without_hold_is_refused() -> None:
    with pytest.raises(InsufficientFunds):
        apply({ALICE: 10**9}, withdrawal_release("w1", "alice", 1, 0))
    with pytest.raises(InsufficientFunds):
        apply({ALICE: 10**9}, withdrawal_settle("w1", "alice", 1, 0, 0))


def test_random_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(500):
        amount = rng.randrange(1, 10**12)
        reserve = fee_reserve_msat(amount, rng.randrange(0, 1_000), rng.randrange(0, 10_000))
        fee_paid = rng.randrange(0, reserve + 1)
        start = {ALICE: amount + reserve + rng.randrange(0, 10**6)}
        held = apply(start, withdrawal_hold("w1", "alice", amount, reserve))
        settled = apply(held, withdrawal_settle("w1", "alice", amount, reserve, fee_paid))
        released = apply(held, withdrawal_release("w1", "alice", amount, reserve))
        assert settled[ALICE] == start[ALICE] - amount - fee_paid
        assert released[ALICE] == start[ALICE]
        assert settled[HOLD] == released[HOLD] == 0


# --- fee_reserve_msat ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "bps", "min_fee", "expected"),
    [
        (100_000, 50, 0, 500),  # exact
        (100_001, 50, 0, 501),  # 500.005 rounds up
        (1, 1, 0, 1),  # any non-zero fraction rounds up
        (0, 50, 0, 0),
        (100_000, 50, 1_000, 1_000),  # the minimum wins
        (1_000_000, 50, 1_000, 5_000),
        (100_000, 0, 10, 10),
    ],
)
def test_fee_reserve(amount: int, bps: int, min_fee: int, expected: int) -> None:
    assert fee_reserve_msat(amount, bps, min_fee) == expected


def test_fee_reserve_rejects_negative_input() -> None:
    with pytest.raises(LedgerError):
        fee_reserve_msat(-1, 50, 0)
    with pytest.raises(LedgerError):
        fee_reserve_msat(1, -1, 0)
    with pytest.raises(LedgerError):
        fee_reserve_msat(1, 1, -1)
