"""Request bodies: read whole within a deadline, and only so many held in memory at once.

A chunk PUT buffers up to ~16 MiB before its handler can look at it, so a few hundred
clients trickling bodies (or simply uploading at once) could hold gigabytes. Every
request with a body takes a slot before its body is read and keeps it until its handler
is done with the bytes; with every slot taken the answer is 503 + Retry-After at once,
without reading. A body that has not fully arrived within the deadline is 408 with
`Connection: close` (aiohttp discards what still arrives for its lingering time, 10 s,
then closes). (Slow request *heads* are the server's job: aiohttp closes a
connection that has not sent a complete head within `keepalive_timeout`, which
gateway.server and __main__ set from `header_timeout_s`.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.problems import Handler, Problem


def body_middleware(max_buffered: int, read_timeout_s: float, retry_after_s: int) -> Any:
    slots = asyncio.Semaphore(max_buffered)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        if slots.locked():
            return _closing(
                Problem(
                    503,
                    "too-many-uploads",
                    "Too many uploads in progress",
                    "the gateway is receiving as many request bodies as it holds at once; "
                    "retry shortly",
                    headers={"Retry-After": str(retry_after_s)},
                )
            )
        async with slots:
            try:
                async with asyncio.timeout(read_timeout_s):
                    await request.read()  # kept by aiohttp for the handler's read()
            except TimeoutError:
                return _closing(
                    Problem(
                        408,
                        "body-timeout",
                        "Request body too slow",
                        f"the request body must arrive within {read_timeout_s:g} s",
                    )
                )
            return await handler(request)

    return middleware


def _closing(problem: Problem) -> web.Response:
    """The problem's response, closing the connection: the unread body is not wanted."""
    response = problem.response()
    response.force_close()
    return response
