"""Waiting on a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from lightning.errors import LightningError
from regtest.process import ManagedProcess

T = TypeVar("T")


class NetworkError(RuntimeError):
    """The network could not be brought up; the message includes the failing log."""


async def wait_until(
    what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 60, every_s: float = 0.2
) -> None:
    """Polls `check` until it returns True; errors while polling count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (LightningError, aiohttp.ClientError, OSError, RuntimeError, ValueError) as exc:
            last_error = exc
        await asyncio.sleep(every_s)
    raise NetworkError(f"timed out after {timeout_s:.0f}s waiting for {what}: {last_error!r}")


async def wait_process_ready(
    proc: ManagedProcess, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float
) -> None:
    """Like wait_until, but fails at once (with the log) if the process has exited."""

    async def alive_and_ready() -> bool:
        if not proc.running():
            raise _Exited(f"{proc.name} exited early:\n{proc.log_tail()}")
        return await check()

    try:
        await wait_until(what, alive_and_ready, timeout_s)
    except _Exited as exc:
        raise NetworkError(str(exc)) from None
    except NetworkError as exc:
        raise NetworkError(f"{exc}\n--- {proc.name} log ---\n{proc.log_tail()}") from None


class _Exited(Exception):
    """Not caught by wait_until's polling, so an exited process ends the wait at once."""


async def all_or_none(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Runs coroutines concurrently; if one fails, cancels the others (asyncio.gather
    would leave them running, starting nodes after the network was torn down) and
    raises that first error as it is (TaskGroup would wrap it in an ExceptionGroup)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
