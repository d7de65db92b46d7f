"""Moving bytes from one socket into a response's socket with splice(2), past Python.

Relaying a chunk through aiohttp cost the gateway about as much CPU as kubo spent serving
it: every piece was received into a Python object, handed through a stream reader and
written out again. splice(2) moves the bytes socket → pipe → socket inside the kernel
(page references, not copies), so relaying a MiB costs a handful of system calls.

The response's socket belongs to aiohttp's transport: it is written to here only after
the response's head has left the transport's buffer (so nothing can overtake it), through
a duplicate of its descriptor (asyncio refuses to watch a transport's own descriptor, and
a duplicate can never be a number the process has since reused for another file). Linux
and plain TCP only: :func:`target` says whether a response can take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

__all__ = ["Splicer", "spliceable", "target"]

# Bytes moved per splice: a pipe this large (the default is 64 KiB) halves the calls per MiB
# twice over; a pipe that cannot grow (a user over its pipe allowance) still works.
_PIPE_BYTES = 256 << 10
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _ready(fd: int, write: bool, timeout_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, waiter)
    else:
        loop.add_reader(fd, _wake, waiter)
    try:
        async with asyncio.timeout(timeout_s):
            await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _socket(request: web.Request) -> socket.socket | None:
    """The request connection's socket if a response body can be spliced into it (Linux,
    a plain TCP socket, no TLS, still open)."""
    transport = request.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if (
        not sys.platform.startswith("linux")
        or not hasattr(os, "splice")
        or transport is None
        or transport.is_closing()
        or transport.get_extra_info("sslcontext") is not None
        or sock is None
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
    ):
        return None
    return sock  # type: ignore[no-any-return]


def spliceable(request: web.Request) -> bool:
    """Whether :func:`target` would give a descriptor now."""
    return _socket(request) is not None


@contextmanager
def target(request: web.Request) -> Iterator[int | None]:
    """A duplicate of the descriptor of the request's connection if a response body can be
    spliced into it (Linux, a plain TCP socket, no TLS), else None; closed afterwards."""
    sock = _socket(request)
    if sock is None:
        yield None
        return
    fd = os.dup(sock.fileno())
    try:
        yield fd
    finally:
        os.close(fd)


class Splicer:
    """Moves a source socket's bytes into the response's socket ``dst`` (from
    :func:`target`); ``sent`` counts the bytes the response's socket has taken so far,
    also when moving stopped with an error."""

    def __init__(self, request: web.Request, dst: int) -> None:
        self._request = request
        self._dst = dst
        self.sent = 0

    async def flushed(self) -> None:
        """Until the transport has handed everything written so far to the socket: what is
        spliced next must come after it."""
        transport = self._request.transport
        while transport is not None and transport.get_write_buffer_size():
            await _ready(self._dst, True, None)
            await asyncio.sleep(0)  # the transport's own writer runs on the same event
            transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client's connection closed")

    async def move(self, src: socket.socket, count: int, read_timeout_s: float) -> int:
        """Up to ``count`` bytes from ``src`` into the response; returns how many it moved
        (fewer only if ``src`` ended first). ConnectionError if the client went away;
        TimeoutError if ``src`` sent nothing for ``read_timeout_s``."""
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(write, _F_SETPIPE_SZ, _PIPE_BYTES)
            return await self._move(src.fileno(), read, write, count, read_timeout_s)
        finally:
            os.close(read)
            os.close(write)

    async def _move(self, src: int, read: int, write: int, count: int, timeout_s: float) -> int:
        moved = 0
        left = count  # still to take from src
        in_pipe = 0
        while left or in_pipe:
            if left and not in_pipe:
                try:
                    n = os.splice(src, write, min(left, _PIPE_BYTES), flags=_FLAGS)
                except BlockingIOError:
                    await _ready(src, False, timeout_s)
                    continue
                if n == 0:  # src ended
                    break
                left -= n
                in_pipe += n
            try:
                n = os.splice(read, self._dst, in_pipe, flags=_FLAGS)
            except BlockingIOError:
                await _ready(self._dst, True, None)  # a slow client: as long as it reads
                continue
            in_pipe -= n
            moved += n
            self.sent += n
        return moved
