"""Running coroutines together, and finishing what cannot be undone despite a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


async def _settle(work: Coroutine[Any, Any, _T], keep: Callable[[_T], None]) -> _T:
    """Await ``work`` and pass its result to ``keep``, even if we are cancelled meanwhile.

    For what cannot be undone once started (a payment, a chunk already received): on
    cancellation it is waited for and its result kept before the cancellation goes on.
    """
    future = asyncio.ensure_future(work)
    try:
        result = await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        if future.done() and not future.cancelled() and future.exception() is None:
            keep(future.result())
        raise
    keep(result)
    return result


async def _run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run together; on the first failure cancel the others and raise that failure."""
    tasks = [asyncio.create_task(c) for c in coros]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        # Let cancelled tasks finish their cleanup (e.g. wait for a payment in flight).
        await asyncio.gather(*tasks, return_exceptions=True)
