"""gateway/http/flush.py: the app's cleanup waits for the tail of a response to leave the
transport's write buffer (a slow reader), and gives up at its deadline (a reader that
never reads). A real server on loopback; the server socket's send buffer is made small so
that most of the body waits in asyncio's buffer rather than the kernel's."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.http import flush
from regtest.process import free_port

BODY = 1 << 20
PIECE = 64 * 1024
HELD = 48 * 1024


class _Server:
    def __init__(self, runner: web.AppRunner, port: int, sent: asyncio.Event) -> None:
        self.runner, self.port, self.sent = runner, port, sent
        self.transports: list[asyncio.WriteTransport] = []


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    sent = asyncio.Event()
    app = web.Application()
    flush.install(app, timeout_s=0.5)

    async def body(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert isinstance(transport, asyncio.WriteTransport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        srv.transports.append(transport)
        response = web.StreamResponse()
        response.content_length = BODY
        await response.prepare(request)
        for _ in range(BODY // PIECE):
            await response.write(b"x" * PIECE)
        await response.write_eof()
        sent.set()  # the handler is done; its tail may still be buffered
        return response

    app.router.add_get("/", body)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    srv = _Server(runner, port, sent)
    try:
        yield srv
    finally:
        await runner.cleanup()


async def _request(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return sock


async def _read(sock: socket.socket, resume: asyncio.Event) -> bytes:
    """Reads all but the last 48 KiB (so the handler can finish while they are still
    buffered: below the 64 KiB at which its writes wait), then the rest once resumed."""
    loop = asyncio.get_running_loop()
    data = b""
    while part := await loop.sock_recv(sock, 1024):
        data += part
        if not resume.is_set() and len(data.partition(b"\r\n\r\n")[2]) >= BODY - HELD:
            await resume.wait()
    return data


async def test_cleanup_waits_until_the_tail_has_left_the_write_buffer(server: _Server) -> None:
    sock = await _request(server.port)
    with sock:
        resume = asyncio.Event()
        reader = asyncio.create_task(_read(sock, resume))
        await asyncio.wait_for(server.sent.wait(), 30)
        [transport] = server.transports
        assert transport.get_write_buffer_size() > 0  # a tail the handler left behind
        resume.set()
        await server.runner.cleanup()  # what run_app does before stopping the loop
        # Without the flush step this is the buffered tail, lost when the process exits.
        assert transport.get_write_buffer_size() == 0
        data = await asyncio.wait_for(reader, 30)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == BODY


async def test_cleanup_gives_up_at_the_deadline_when_the_reader_stalls(server: _Server) -> None:
    sock = await _request(server.port)
    with sock:
        reader = asyncio.create_task(_read(sock, asyncio.Event()))  # stalls before the tail
        await asyncio.wait_for(server.sent.wait(), 30)
        [transport] = server.transports
        started = time.monotonic()
        await server.runner.cleanup()
        waited = time.monotonic() - started
        assert transport.get_write_buffer_size() > 0
        reader.cancel()
    assert 0.4 <= waited < 3  # the 0.5 s deadline, counted from shutdown, not forever
