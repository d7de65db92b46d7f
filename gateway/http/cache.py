"""Answers of slow dependencies (LND), reused for a while and shared by concurrent callers.

`/v1/health` and `/v1/l402/preimage` are free and unauthenticated; without this each
request was one LND call. An answer is reused for `ttl_s`, or for good once `final` says
it cannot change (a settled invoice stays settled with the same preimage); callers asking
while a call is in flight wait for that call instead of making their own. Failures are
not kept: the next caller asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    at: float
    final: bool


class AnswerCache(Generic[K, V]):
    """At most `max_entries` answers, least recently used dropped first."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._pending: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: K,
        fetch: Callable[[], Awaitable[V]],
        final: Callable[[V], bool] = lambda _: False,
    ) -> V:
        entry = self._entries.get(key)
        if entry is not None and (entry.final or self._clock() - entry.at < self._ttl_s):
            self._entries.move_to_end(key)
            return entry.value
        pending = self._pending.get(key)
        if pending is None:
            # A task of its own, so a caller that goes away does not cancel the others' call.
            pending = self._pending[key] = asyncio.ensure_future(self._fetch(key, fetch, final))
        return await asyncio.shield(pending)

    async def _fetch(
        self, key: K, fetch: Callable[[], Awaitable[V]], final: Callable[[V], bool]
    ) -> V:
        try:
            value = await fetch()
        finally:
            del self._pending[key]
        self._entries[key] = _Entry(value, self._clock(), final(value))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return value
