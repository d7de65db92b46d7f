"""gateway.http.cache: answers reused for a while, for good once final, one call at a time."""

from __future__ import annotations

import asyncio

from gateway.http.cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_reused_within_the_ttl_then_asked_again() -> None:
    clock, calls = Clock(), []

    async def fetch() -> int:
        calls.append(clock.now)
        return len(calls)

    cache: AnswerCache[str, int] = AnswerCache(1.0, clock=clock)
    assert [await cache.get("k", fetch) for _ in range(5)] == [1] * 5
    clock.now = 0.99
    assert await cache.get("k", fetch) == 1
    clock.now = 1.0
    assert await cache.get("k", fetch) == 2
    assert calls == [0.0, 1.0]


async def test_final_answers_are_kept_for_good() -> None:
    clock, calls = Clock(), []

    async def fetch() -> str:
        calls.append(1)
        return "settled" if len(calls) > 1 else "open"

    cache: AnswerCache[str, str] = AnswerCache(1.0, clock=clock)
    assert await cache.get("h", fetch, final=lambda v: v == "settled") == "open"
    clock.now = 5
    assert await cache.get("h", fetch, final=lambda v: v == "settled") == "settled"
    clock.now = 10_000
    assert await cache.get("h", fetch, final=lambda v: v == "settled") == "settled"
    assert len(calls) == 2


async def test_concurrent_callers_share_one_call_and_failures_are_not_kept() -> None:
    calls = 0
    release = asyncio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        if calls == 1:
            raise RuntimeError("node down")
        return calls

    cache: AnswerCache[str, int] = AnswerCache(60.0)
    waiting = [asyncio.ensure_future(cache.get("k", fetch)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get("k", fetch) == 2


async def test_bounded_least_recently_used_first() -> None:
    async def fetch() -> int:
        return 0

    cache: AnswerCache[int, int] = AnswerCache(60.0, max_entries=3)
    for key in range(10):
        await cache.get(key, fetch)
    assert len(cache) == 3
