"""Tests for gateway.billing.quota: plans, subscription extension, limits and metering."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.billing.quota import (
    OverQuota,
    Plan,
    Subscription,
    byte_days,
    byte_seconds,
    check_reservation,
    extend,
    quota_limit,
)

NOW = 1_700_000_000
DAY = 86_400
GIB = 1 << 30
BASIC = Plan(id="basic", name="Basic", quota_bytes=10 * GIB, duration_s=30 * DAY, price_msat=5_000)
PRO = Plan(id="pro", name="Pro", quota_bytes=100 * GIB, duration_s=30 * DAY, price_msat=40_000)
FREE = GIB


# --- Plan ---------------------------------------------------------------------------------


def test_plan_is_frozen() -> None:
    with pytest.raises(ValidationError):
        BASIC.price_msat = 1  # type: ignore[misc, unused-ignore]


@pytest.mark.parametrize(
    "change",
    [
        {"id": ""},
        {"id": "Basic"},
        {"id": "a" * 33},
        {"id": "basic plan"},
        {"quota_bytes": 0},
        {"duration_s": -1},
        {"price_msat": 0},
        {"price_msat": 1.5},  # money is never a float
        {"price_msat": "100"},
        {"unknown": 1},
    ],
)
def test_plan_rejects_bad_fields(change: dict[str, Any]) -> None:
    fields = BASIC.model_dump() | change
    with pytest.raises(ValidationError):
        Plan(**fields)


def test_plan_accepts_longest_slug() -> None:
    assert Plan(**(BASIC.model_dump() | {"id": "a-0" * 10 + "zz"})).id == "a-0" * 10 + "zz"


# --- extend -------------------------------------------------------------------------------


def test_first_purchase_starts_now() -> None:
    assert extend([], BASIC, NOW) == Subscription("basic", 10 * GIB, NOW, NOW + 30 * DAY)


def test_buying_again_extends_active_subscription() -> None:
    current = Subscription("basic", 10 * GIB, NOW - 10 * DAY, NOW + 20 * DAY)
    new = extend([current], BASIC, NOW)
    assert (new.starts_at, new.ends_at) == (NOW + 20 * DAY, NOW + 50 * DAY)


def test_extension_queues_after_latest_scheduled_period() -> None:
    subs = [
        Subscription("basic", 10 * GIB, NOW - 10 * DAY, NOW + 20 * DAY),
        Subscription("basic", 10 * GIB, NOW + 20 * DAY, NOW + 50 * DAY),
    ]
    assert extend(subs, BASIC, NOW).starts_at == NOW + 50 * DAY


def test_other_plans_do_not_delay_a_purchase() -> None:
    pro = Subscription("pro", 100 * GIB, NOW - DAY, NOW + 29 * DAY)
    assert extend([pro], BASIC, NOW).starts_at == NOW


def test_subscription_ending_exactly_now_is_not_extended() -> None:
    ended = Subscription("basic", 10 * GIB, NOW - 30 * DAY, NOW)
    assert extend([ended], BASIC, NOW).starts_at == NOW
    still_on = Subscription("basic", 10 * GIB, NOW - 30 * DAY, NOW + 1)
    assert extend([still_on], BASIC, NOW).starts_at == NOW + 1


def test_subscription_validation() -> None:
    with pytest.raises(ValueError):
        Subscription("basic", 10, NOW, NOW)
    with pytest.raises(ValueError):
        Subscription("basic", 0, NOW, NOW + 1)


# --- quota_limit --------------------------------------------------------------------------


def test_free_tier_without_subscriptions() -> None:
    assert quota_limit(FREE, [], NOW) == FREE


def test_largest_active_plan_applies() -> None:
    subs = [
        Subscription("basic", 10 * GIB, NOW - DAY, NOW + DAY),
        Subscription("pro", 100 * GIB, NOW - DAY, NOW + DAY),
    ]
    assert quota_limit(FREE, subs, NOW) == 100 * GIB


def test_free_tier_wins_over_smaller_plan() -> None:
    subs = [Subscription("tiny", GIB // 2, NOW - DAY, NOW + DAY)]
    assert quota_limit(FREE, subs, NOW) == FREE


def test_expiry_boundaries() -> None:
    sub = Subscription("basic", 10 * GIB, NOW, NOW + DAY)
    assert quota_limit(FREE, [sub], NOW - 1) == FREE  # not started yet
    assert quota_limit(FREE, [sub], NOW) == 10 * GIB  # starts_at is included
    assert quota_limit(FREE, [sub], NOW + DAY - 1) == 10 * GIB
    assert quota_limit(FREE, [sub], NOW + DAY) == FREE  # exactly at ends_at: expired
    assert sub.active_at(NOW) and not sub.active_at(NOW + DAY)


def test_extended_subscription_covers_the_join_without_gap() -> None:
    first = extend([], BASIC, NOW)
    second = extend([first], BASIC, NOW + DAY)
    subs = [first, second]
    for t in (first.ends_at - 1, first.ends_at, second.ends_at - 1):
        assert quota_limit(FREE, subs, t) == BASIC.quota_bytes
    assert quota_limit(FREE, subs, second.ends_at) == FREE


# --- check_reservation --------------------------------------------------------------------


def test_reservation_at_exact_limit_passes() -> None:
    check_reservation(used_bytes=900, requested_bytes=100, limit_bytes=1_000)
    check_reservation(used_bytes=0, requested_bytes=0, limit_bytes=0)


def test_reservation_one_byte_over_fails() -> None:
    with pytest.raises(OverQuota) as caught:
        check_reservation(used_bytes=900, requested_bytes=101, limit_bytes=1_000)
    err = caught.value
    assert (err.used_bytes, err.requested_bytes, err.limit_bytes) == (900, 101, 1_000)
    message = str(err)
    assert "900" in message and "1000" in message
    assert "buy a plan to raise it" in message


def test_reservation_already_over_limit_fails_even_for_zero() -> None:
    # After a plan expires, usage can exceed the limit; nothing more may be added.
    with pytest.raises(OverQuota):
        check_reservation(used_bytes=2_000, requested_bytes=1, limit_bytes=1_000)


def test_reservation_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        check_reservation(used_bytes=900, requested_bytes=-100, limit_bytes=1_000)
    with pytest.raises(ValueError):
        check_reservation(used_bytes=-1, requested_bytes=0, limit_bytes=1_000)


# --- metering -----------------------------------------------------------------------------


def test_byte_seconds() -> None:
    assert byte_seconds(1_000, NOW, NOW + 60) == 60_000
    assert byte_seconds(1_000, NOW, NOW) == 0
    assert byte_seconds(1_000, NOW, NOW - 60) == 0
    assert byte_seconds(0, NOW, NOW + 60) == 0
    with pytest.raises(ValueError):
        byte_seconds(-1, NOW, NOW + 1)


def test_byte_seconds_is_exact_for_large_values() -> None:
    # Python ints don't overflow; a petabyte stored for ten years stays exact.
    assert byte_seconds(10**15, 0, 10 * 365 * DAY) == 10**15 * 10 * 365 * DAY


def test_byte_days() -> None:
    assert byte_days(byte_seconds(GIB, NOW, NOW + DAY)) == GIB
    assert byte_days(DAY // 2) == 0.5
