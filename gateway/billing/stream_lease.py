"""One gateway process at a time follows each Lightning node's invoice stream.

Several gateway processes share one database. Each would otherwise open its own stream
of every node and book the same settlements side by side: harmless, since booking is
idempotent, but N times the work on LND and the database. So a process follows a node's
stream only while it holds the node's lease (gateway/persistence/leases.py):

- every third of a lease it takes or renews the lease; whoever holds it runs the stream;
- a holder that dies (kill -9, a lost machine) stops renewing, and once its lease has
  expired the next process to ask takes it, starting with a reconcile of every open
  invoice, so an invoice paid while nobody followed is still booked, once;
- a process that finds the lease gone to another, or cannot renew it (the database is
  unreachable) before it would expire, stops its stream;
- a clean stop (SIGTERM) releases the lease, so another process takes over at once.

Correctness never rests on the lease alone: if two processes ever overlap for a moment
(a holder paused past its expiry), booking is still exactly once, by the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

from gateway.clock import Clock, system_clock
from gateway.persistence import leases
from gateway.persistence.database import Database

__all__ = ["StreamLease", "holder_id"]

log = logging.getLogger("bitcache.settlement")


def holder_id() -> str:
    """This process, recognisably in a lease row: host, pid, and a random suffix (two
    apps in one process, or a pid reused after a restart, are still told apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class StreamLease:
    """Runs a node's stream only while this process holds the node's lease.

    ``clock`` is the wall clock the lease's expiry is measured on (shared by every process
    on the database); ``report(node, following)`` hears the outcome of every check."""

    def __init__(
        self,
        db: Database,
        lease_s: float,
        clock: Clock = system_clock,
        holder: str | None = None,
        report: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._db = db
        self._lease_s = lease_s
        self._renew_s = lease_s / 3
        self._clock = clock
        self.holder = holder or holder_id()
        self._report = report or (lambda _node, _following: None)

    async def follow(self, node: str, run: Callable[[], Awaitable[None]]) -> None:
        """Forever: ``run()`` (the node's stream) while the lease is ours, not otherwise.

        Cancel to stop: the stream stops and the lease is released."""
        task: asyncio.Task[None] | None = None
        valid_until = 0.0  # when the lease we last took surely ends, by our clock
        try:
            while True:
                asked_at = self._clock()
                try:
                    held = await leases.take(
                        self._db, node, self.holder, _ms(asked_at), _ms(self._lease_s)
                    )
                    if held:
                        valid_until = asked_at + self._lease_s
                except Exception as exc:  # the database is down or locked: try again soon
                    # Keep the stream only if the lease cannot expire before the next try.
                    held = self._clock() + self._renew_s < valid_until
                    log.warning("cannot renew the stream lease of %s: %s", node, exc)
                task = await self._apply(node, held, task, run)
                self._report(node, held)
                await asyncio.sleep(self._renew_s)
        finally:
            if task is not None:
                await _stop(task)
            self._report(node, False)
            if valid_until > self._clock():  # probably still ours: hand it on now
                with contextlib.suppress(Exception):
                    await leases.release(self._db, node, self.holder)

    async def _apply(
        self,
        node: str,
        held: bool,
        task: asyncio.Task[None] | None,
        run: Callable[[], Awaitable[None]],
    ) -> asyncio.Task[None] | None:
        """Starts, keeps, restarts or stops the stream to match ``held``."""
        if task is not None and task.done():
            if not task.cancelled() and task.exception() is not None:
                log.error("invoice stream of %s failed", node, exc_info=task.exception())
            task = None  # started again below if the lease is still ours
        if held and task is None:
            log.info("following the invoice stream of %s (lease holder %s)", node, self.holder)
            return asyncio.create_task(_run(run), name=f"stream {node}")
        if not held and task is not None:
            log.info("stopped following the invoice stream of %s: lease not ours", node)
            await _stop(task)
            return None
        return task


async def _run(run: Callable[[], Awaitable[None]]) -> None:
    await run()


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
