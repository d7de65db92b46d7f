"""Responses written to their last byte before the gateway's event loop stops.

aiohttp's graceful shutdown waits for the handlers in flight, but a handler is done once
its last bytes are in the transport's write buffer: ``write_eof`` waits only while the
buffer is above its high-water mark (64 KiB), so up to that much of a streamed chunk can
still be waiting for a slow client. `python -m gateway` then stops the event loop and
the process exits with the tail unsent. Here every transport that carried a response is
remembered (weakly), and at cleanup the app waits until each one's write buffer is empty
(or its connection gone), until the same deadline as the handlers': ``shutdown_timeout_s``
after the shutdown began. The kernel delivers what it was handed after the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from aiohttp import web

__all__ = ["install"]

log = logging.getLogger("bitcache.gateway")

_POLL_S = 0.02  # asyncio has no "buffer empty" event for a transport that is not paused


def _unsent(transports: weakref.WeakSet[asyncio.BaseTransport]) -> int:
    """Bytes still in the write buffers of the transports not yet closed for good."""
    total = 0
    for transport in list(transports):
        if isinstance(transport, asyncio.WriteTransport):
            total += transport.get_write_buffer_size()
    return total


def install(app: web.Application, timeout_s: float) -> None:
    """Makes ``app`` remember the transports of its responses and, at cleanup, wait up to
    ``timeout_s`` after shutdown began for their write buffers to empty."""
    transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
    shutdown_at: list[float] = []  # set once the listening socket is closed

    async def remember(request: web.Request, _response: web.StreamResponse) -> None:
        if request.transport is not None:
            transports.add(request.transport)

    async def shutdown_began(_app: web.Application) -> None:
        shutdown_at.append(time.monotonic())

    async def flushed(_app: web.Application) -> None:
        deadline = (shutdown_at[0] if shutdown_at else time.monotonic()) + timeout_s
        unsent = _unsent(transports)
        while unsent and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            unsent = _unsent(transports)
        if unsent:
            log.warning("exiting with %d response bytes unsent after %g s", unsent, timeout_s)

    app.on_response_prepare.append(remember)
    app.on_shutdown.append(shutdown_began)
    # First of the cleanup steps (the handlers are done by now: aiohttp waited for them),
    # so that a cleanup step that fails cannot skip it.
    app.on_cleanup.insert(0, flushed)
