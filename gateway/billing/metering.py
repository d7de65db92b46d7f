"""Bytes served per file: counted in memory, written in one transaction a second.

Every chunk served used to be its own write transaction on the files' bytes_served counter,
queued behind the database's one writer with the sales and uploads. The meter adds to a
dict instead; :meth:`ServedMeter.run` hands the totals to the store every ``interval_s`` and
once more when stopped (the gateway stops it after the last request has finished). A flush
that fails puts its totals back, so a later one writes them: nothing is lost, and nothing is
counted twice, because a batch is taken out before it is written and returned only on
failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["ServedMeter"]

log = logging.getLogger("bitcache.gateway")

Sink = Callable[[Mapping[str, int]], Awaitable[None]]


class ServedMeter:
    """Accumulates bytes served per file id and flushes them through ``sink`` (one
    transaction per call)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._pending: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    @property
    def pending(self) -> Mapping[str, int]:
        """Totals not written yet (a copy)."""
        return dict(self._pending)

    def add(self, file_id: str, nbytes: int) -> None:
        if nbytes > 0:
            self._pending[file_id] = self._pending.get(file_id, 0) + nbytes

    async def flush(self) -> int:
        """Write what was counted so far; returns the number of files written."""
        async with self._lock:  # the periodic and the final flush never overlap
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                await self._sink(batch)
            except BaseException:
                for file_id, nbytes in batch.items():  # counted since? add them up
                    self.add(file_id, nbytes)
                raise
            return len(batch)

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s`` until :meth:`stop`, then flush a last time."""
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), interval_s)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception:  # the database may be busy or down: the totals wait
                log.exception("writing bytes served failed; retrying")

    def stop(self) -> None:
        """Ask :meth:`run` to flush a last time and return."""
        self._stop.set()
