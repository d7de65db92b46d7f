"""Waiting on a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from lightning.errors import LightningError
from regtest.process import ManagedProcess


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
