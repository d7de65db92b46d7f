import time

import pytest

from gateway.http.ratelimit import RateLimiter


def test_burst_then_refill_at_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", 0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.take("a", 0.25) == pytest.approx(0.25)  # half a token back, not enough
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("b", 0.5) == 0.0  # clients do not share buckets


def test_never_more_than_burst_after_idle() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=2)
    limiter.take("a", 0.0)
    allowed = [limiter.take("a", 1000.0) for _ in range(5)]
    assert allowed.count(0.0) == 2


def test_memory_is_bounded_even_when_no_bucket_has_refilled() -> None:
    # Distinct clients all at once (a flood of addresses): none is full again yet, and
    # the table still never grows past its bound.
    limiter = RateLimiter(rate_per_s=1, burst=1, max_clients=1_000)
    for i in range(20_000):
        assert limiter.take(f"c{i}", 0.0) == 0.0
        assert len(limiter) <= 1_000
    assert len(limiter) == 1_000


def test_the_least_recently_used_client_is_evicted() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=1, max_clients=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    assert limiter.take("a", 0.0) > 0  # a is used again: b is now the oldest
    limiter.take("c", 0.0)  # evicts b
    assert limiter.take("a", 0.0) > 0  # a kept its empty bucket
    assert limiter.take("b", 0.0) == 0.0  # b was forgotten: a fresh bucket


def test_eviction_is_constant_time() -> None:
    """A full table of 200 000 clients: each new client costs the same as in a small one
    (the old eviction rebuilt the whole table on every new client)."""
    big = RateLimiter(rate_per_s=1, burst=5, max_clients=200_000)
    for i in range(200_000):
        big.take(f"c{i}", 0.0)
    started = time.perf_counter()
    for i in range(20_000):
        big.take(f"new{i}", 0.0)
    elapsed = time.perf_counter() - started
    assert len(big) == 200_000
    assert elapsed < 1.0, f"20 000 evictions took {elapsed:.2f} s"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)
