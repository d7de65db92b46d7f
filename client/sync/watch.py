"""``bitcache sync --watch``: a pass whenever the folder or the vault changes, and a full
scan now and then anyway (file watchers miss events; Syncthing rescans hourly)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import watchfiles

from client.sync.engine import Report, SyncEngine
from client.sync.naming import STATE_DIR

log = logging.getLogger("bitcache.sync")
FULL_SCAN_S = 300.0
LONG_POLL_S = 50


async def watch(
    engine: SyncEngine,
    on_pass: Callable[[Report], None],
    full_scan_s: float = FULL_SCAN_S,
) -> None:
    wake = asyncio.Event()
    stop = asyncio.Event()

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

    tasks = [asyncio.create_task(local()), asyncio.create_task(remote())]
    try:
        while True:
            wake.clear()
            try:
                on_pass(await engine.run_once())
            except Exception as exc:
                log.warning("sync pass failed (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), full_scan_s)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
