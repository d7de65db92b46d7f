"""``bitcache sync --watch``: a pass whenever the folder or the vault changes, and a full
scan now and then anyway (file watchers miss events; Syncthing rescans hourly).

Remote changes arrive through one long-poll on the vault's change counter at a time (the
gateway answers as soon as the counter moves), never a tight poll. ``stop`` ends it cleanly:
a pass in progress is cancelled, which is safe because every chunk already stored is in the
local journal and the vault is written only by compare-and-set at the end of a pass."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import watchfiles

from client.sync.engine import Report, SyncEngine
from client.sync.naming import STATE_DIR

log = logging.getLogger("bitcache.sync")
FULL_SCAN_S = 300.0
LONG_POLL_S = 50
T = TypeVar("T")


async def watch(
    engine: SyncEngine,
    on_pass: Callable[[Report], None],
    full_scan_s: float = FULL_SCAN_S,
    stop: asyncio.Event | None = None,
) -> None:
    wake = asyncio.Event()
    stop = stop or asyncio.Event()

    def ours(_: watchfiles.Change, path: str) -> bool:
        return f"/{STATE_DIR}" not in path and not path.endswith(".bitcache-part")

    async def local() -> None:
        async for _ in watchfiles.awatch(
            engine.folder, watch_filter=ours, stop_event=stop, debounce=500
        ):
            wake.set()

    async def remote() -> None:
        while True:
            try:
                counter, _ = await engine.vault.changes(engine.state.counter, wait=LONG_POLL_S)
                if counter > engine.state.counter:
                    wake.set()
                    await asyncio.sleep(0.2)  # let the pass take it in
            except Exception as exc:  # the gateway may be away: retry, never die
                log.warning("waiting for vault changes failed: %s", exc)
                await asyncio.sleep(5)

    async def until_stopped(aw: Awaitable[T]) -> T | None:
        """``aw``'s result, or None (it cancelled) once ``stop`` is set."""
        task = asyncio.ensure_future(aw)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
        return task.result()

    tasks = [asyncio.create_task(local()), asyncio.create_task(remote())]
    try:
        while not stop.is_set():
            wake.clear()
            try:
                report = await until_stopped(engine.run_once())
                if report is not None:
                    on_pass(report)
            except Exception as exc:
                log.warning("sync pass failed (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await until_stopped(asyncio.wait_for(wake.wait(), full_scan_s))
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
