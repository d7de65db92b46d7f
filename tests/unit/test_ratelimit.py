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


def test_memory_is_bounded_and_refilled_clients_are_forgotten() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_clients=10)
    for i in range(10):
        limiter.take(f"c{i}", 0.0)
    limiter.take("late", 100.0)  # everyone else has long refilled
    assert len(limiter._buckets) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)
