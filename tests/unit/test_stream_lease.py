"""The invoice-stream lease: one holder at a time, takeover after expiry, stop when lost.

Real SQLite, one Database object per simulated process (each has its own connections, as
two processes would); the lease's wall clock is a number the test moves. The same lease
between two real gateway processes is in tests/integration/test_scale.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.billing.stream_lease import StreamLease
from gateway.persistence import leases
from gateway.persistence.database import Database, open_database

NODE = "https://lnd.example:8080"
LEASE_S = 0.3  # renewed every 0.1 s of real time


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """Stands in for a watcher's run(): records whether it is running."""

    def __init__(self, fail_first: bool = False) -> None:
        self.running = False
        self.starts = 0
        self._fail_first = fail_first

    async def __call__(self) -> None:
        self.starts += 1
        if self._fail_first and self.starts == 1:
            raise RuntimeError("stream broke")
        self.running = True
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False


async def until(what: str, check: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def dbs(database_location: str | Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two processes' views of one database: a SQLite file, then PostgreSQL (two pools)."""
    a, b = open_database(database_location), open_database(database_location)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_take_renew_expire_release(dbs: tuple[Database, Database]) -> None:
    db, _ = dbs
    assert await leases.take(db, NODE, "a", now_ms=1_000, ttl_ms=500)
    assert not await leases.take(db, NODE, "b", now_ms=1_499, ttl_ms=500)  # a's until 1500
    assert await leases.take(db, NODE, "a", now_ms=1_400, ttl_ms=500)  # renewed: until 1900
    assert not await leases.take(db, NODE, "b", now_ms=1_800, ttl_ms=500)
    assert await leases.take(db, NODE, "b", now_ms=1_900, ttl_ms=500)  # a's has expired
    assert await leases.current(db, NODE) == leases.Lease(NODE, "b", 2_400)
    assert not await leases.take(db, NODE, "a", now_ms=2_000, ttl_ms=500)
    assert not await leases.release(db, NODE, "a")  # not a's to give
    assert await leases.release(db, NODE, "b")
    assert await leases.take(db, NODE, "a", now_ms=2_000, ttl_ms=500)  # free at once
    assert await leases.take(db, "another node", "b", now_ms=2_000, ttl_ms=500)


async def test_concurrent_takers_get_one_lease(dbs: tuple[Database, Database]) -> None:
    a, b = dbs
    results = await asyncio.gather(
        *(leases.take((a, b)[i % 2], NODE, f"p{i}", now_ms=5_000, ttl_ms=1_000) for i in range(20))
    )
    assert sum(results) == 1


async def _following(lease: StreamLease, stream: Stream) -> asyncio.Task[None]:
    return asyncio.create_task(lease.follow(NODE, stream))


def _lease(db: Database, clock: Clock, name: str, reports: list[bool]) -> StreamLease:
    return StreamLease(
        db, LEASE_S, clock, holder=name, report=lambda _node, held: reports.append(held)
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_one_follows_and_the_other_takes_over_when_it_dies(
    dbs: tuple[Database, Database],
) -> None:
    clock = Clock()
    db_a, db_b = dbs
    a_reports: list[bool] = []
    b_reports: list[bool] = []
    stream_a, stream_b = Stream(), Stream()
    a = await _following(_lease(db_a, clock, "a", a_reports), stream_a)
    await until("a follows", lambda: stream_a.running)
    b = await _following(_lease(db_b, clock, "b", b_reports), stream_b)
    await until("b checked the lease twice", lambda: len(b_reports) >= 2)
    assert not stream_b.running and not any(b_reports)
    # a dies without a word (kill -9): its database goes away, so it neither renews nor
    # releases; its row stays until it expires.
    await db_a.close()
    await _cancel(a)
    assert (await leases.current(db_b, NODE)) is not None
    assert not stream_b.running
    clock.now += LEASE_S  # a's lease expires
    await until("b takes over", lambda: stream_b.running)
    holder = await leases.current(db_b, NODE)
    assert holder is not None and holder.holder == "b"
    await _cancel(b)


async def test_a_holder_that_loses_its_lease_stops_its_stream(
    dbs: tuple[Database, Database],
) -> None:
    clock = Clock()
    ahead = Clock()  # b's clock runs ahead, as if a had been paused past its expiry
    db_a, db_b = dbs
    stream_a, stream_b = Stream(), Stream()
    a = await _following(_lease(db_a, clock, "a", []), stream_a)
    await until("a follows", lambda: stream_a.running)
    ahead.now = clock.now + 2 * LEASE_S
    b = await _following(_lease(db_b, ahead, "b", []), stream_b)
    await until("b takes the expired lease", lambda: stream_b.running)
    await until("a sees it lost the lease and stops", lambda: not stream_a.running)
    assert stream_b.running
    await _cancel(a)
    await _cancel(b)


async def test_a_holder_that_cannot_renew_stops_before_its_lease_ends(
    dbs: tuple[Database, Database],
) -> None:
    clock = Clock()
    db_a, _ = dbs
    stream = Stream()
    reports: list[bool] = []
    a = await _following(_lease(db_a, clock, "a", reports), stream)
    await until("a follows", lambda: stream.running)
    await db_a.close()  # the database becomes unreachable for a
    seen = len(reports)
    await until("three failed renewals", lambda: len(reports) >= seen + 3)
    assert stream.running and all(reports)  # the clock has not moved: the lease still holds
    clock.now += LEASE_S * 2 / 3  # the lease would end before the next renewal
    await until("a stops following", lambda: not stream.running)
    await _cancel(a)


async def test_a_clean_stop_hands_the_lease_on_at_once(dbs: tuple[Database, Database]) -> None:
    clock = Clock()
    db_a, db_b = dbs
    stream_a, stream_b = Stream(), Stream()
    a = await _following(_lease(db_a, clock, "a", []), stream_a)
    await until("a follows", lambda: stream_a.running)
    b = await _following(_lease(db_b, clock, "b", []), stream_b)
    await _cancel(a)  # SIGTERM: a stops its stream and releases the lease
    assert not stream_a.running
    # Released: nobody holds it, or b (polling) has already taken it (PostgreSQL lets b's
    # take run the moment a's release commits).
    lease = await leases.current(db_b, NODE)
    assert lease is None or lease.holder == "b"
    await until("b follows without waiting for expiry", lambda: stream_b.running)
    await _cancel(b)


async def test_a_stream_that_ends_is_started_again(dbs: tuple[Database, Database]) -> None:
    db_a, _ = dbs
    stream = Stream(fail_first=True)
    a = await _following(_lease(db_a, Clock(), "a", []), stream)
    await until("the stream runs again", lambda: stream.running)
    assert stream.starts == 2
    await _cancel(a)
