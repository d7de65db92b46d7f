"""Request bodies: read whole within a deadline, and only so many bytes held at once.

A chunk PUT buffers up to ~16 MiB before its handler can look at it, so a few hundred
clients trickling bodies (or simply uploading at once) could hold gigabytes. Every
request with a body reserves its size (its Content-Length, or the largest body allowed
when it sends none) from a budget before the body is read, and keeps the reservation
until its handler is done with the bytes; a request that does not fit is answered 503 +
Retry-After at once, without reading. Counting bytes rather than requests lets a burst
of small JSON requests through while a handful of slow chunk uploads cannot pin
memory. A body that has not fully arrived within the deadline is 408 with
`Connection: close` (aiohttp discards what still arrives for its lingering time, 10 s,
then closes). Slow request *heads* are the server's job: aiohttp closes a connection
that has not sent a complete head within `keepalive_timeout`, which gateway.server and
__main__ set from `header_timeout_s`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.http.problems import Handler, Problem


class BodyBudget:
    """Bytes of request bodies being received or held, against a cap (pure)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def reserve(self, size: int) -> bool:
        """Takes `size` bytes if they fit (a body larger than the whole cap never does)."""
        if self.held + size > self.max_bytes:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


def body_middleware(
    max_bytes: int, largest_body: int, read_timeout_s: float, retry_after_s: int
) -> Any:
    budget = BodyBudget(max_bytes)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        size = min(request.content_length or largest_body, largest_body)
        if not budget.reserve(size):
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
        try:
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
        finally:
            budget.release(size)

    return middleware


def _closing(problem: Problem) -> web.Response:
    """The problem's response, closing the connection: the unread body is not wanted."""
    response = problem.response()
    response.force_close()
    return response
