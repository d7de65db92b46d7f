"""gateway/http/chunk_stream.py's spliced path: a chunk from kubo's bare HTTP/1.0 socket
(ipfs/kubo_socket.py) spliced into the client's (gateway/http/splice.py), with the same
rules as the streamed path: the whole block with its length, a wrong size never a complete
200, storage failing before any byte a problem answer.

A fake kubo RPC on loopback answers ``cat`` over HTTP/1.0 as kubo does (a head, the bytes,
then the connection closed); a real KuboClient reads it, a small aiohttp app with the
gateway's problem middleware serves the chunk, and aiohttp's client reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.http.chunk_stream import discard_cat, early_cat, stream_block, stream_blocks
from gateway.http.middleware import problem_middleware
from ipfs.kubo import KuboClient
from regtest.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "splice"), reason="splice(2)"
)

SIZE = 3 * 65_536 + 17


class FakeKubo:
    """Answers every cat with ``status``, ``announced`` as X-Content-Length and ``body``,
    then closes (or, with ``stall``, keeps the connection open and silent)."""

    def __init__(self, body: bytes, status: int = 200, announced: int | None = None) -> None:
        self.body = body
        self.status = status
        self.announced = len(body) if announced is None else announced
        self.request_lines: list[str] = []
        self.server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.request_lines.append(head.split(b"\r\n", 1)[0].decode())
        if self.status == 200:
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Stream-Error\r\n"
                + f"X-Content-Length: {self.announced}\r\n\r\n".encode()
            )
            for i in range(0, len(self.body), 50_000):  # in several segments, as a socket does
                writer.write(self.body[i : i + 50_000])
                await writer.drain()
        else:
            message = json.dumps({"Message": "block not found", "Code": 0, "Type": "error"})
            writer.write(
                f"HTTP/1.0 {self.status} Error\r\nContent-Type: application/json\r\n\r\n".encode()
                + message.encode()
            )
        await writer.drain()
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def serve(aiohttp_server: Any) -> Any:
    started: list[tuple[FakeKubo, KuboClient]] = []

    async def start(kubo: FakeKubo, size: int = SIZE, early: bool = False) -> tuple[list[int], str]:
        store = KuboClient(await kubo.start(), timeout_s=5)
        started.append((kubo, store))
        sent: list[int] = []
        app = web.Application(middlewares=[problem_middleware(5)])

        async def handler(request: web.Request) -> web.StreamResponse:
            # early: the connection to kubo opened while the handler awaits something else
            cat = early_cat(request, store, "bafy") if early else None
            assert (cat is not None) == early
            await asyncio.sleep(0)
            response, n = await stream_block(request, store, "bafy", size, {"ETag": '"bafy"'}, cat)
            sent.append(n)
            return response

        app.router.add_get("/chunk", handler)
        server = await aiohttp_server(app)
        return sent, str(server.make_url("/chunk"))

    yield start
    for kubo, store in started:
        await store.close()
        await kubo.stop()


@pytest.mark.parametrize("early", [False, True], ids=["opened-there", "opened-early"])
@pytest.mark.parametrize("size", [SIZE, 1_048_576 + 40, 1000], ids=["3x64k", "1MiB", "small"])
async def test_a_whole_block_is_spliced_with_its_length(serve: Any, size: int, early: bool) -> None:
    data = os.urandom(size)
    kubo = FakeKubo(data)
    sent, url = await serve(kubo, size, early)
    connector = aiohttp.TCPConnector(limit=1)  # the connection stays usable after each
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(2):
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(size)
                assert resp.headers["ETag"] == '"bafy"'
                assert await resp.read() == data
    assert sent == [size, size]
    assert kubo.request_lines == ["POST /api/v0/cat?arg=bafy HTTP/1.0"] * 2  # the bare path


@pytest.mark.parametrize(
    "wrong", [SIZE - 1000, SIZE - 100_000, SIZE + 1, SIZE + 70_000], ids=lambda n: str(n - SIZE)
)
async def test_a_wrong_size_midway_is_never_a_complete_200(serve: Any, wrong: int) -> None:
    # kubo announces the recorded size, then sends another: found once bytes went out.
    sent, url = await serve(FakeKubo(os.urandom(wrong), announced=SIZE), SIZE, True)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # the body ends short of Content-Length: an error, not a chunk
    assert 0 < sent[0] < SIZE


@pytest.mark.parametrize("body", [b"", os.urandom(SIZE - 1)], ids=["empty", "announced-short"])
async def test_a_wrong_size_before_any_byte_is_a_problem_answer(serve: Any, body: bytes) -> None:
    sent, url = await serve(FakeKubo(body))  # announces what it sends: not the recorded size
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 502
        assert (await resp.json())["type"].endswith("storage-corrupt")
    assert sent == []  # raised as a problem


@pytest.mark.parametrize("early", [False, True], ids=["opened-there", "opened-early"])
@pytest.mark.parametrize(("status", "answer"), [(500, 502), (502, 503)])
async def test_kubo_failing_before_any_byte_is_a_problem(
    serve: Any, status: int, answer: int, early: bool
) -> None:
    _, url = await serve(FakeKubo(b"", status=status), SIZE, early)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == answer
        assert resp.content_type == "application/problem+json"


async def test_kubo_not_there_is_unavailable(serve: Any) -> None:
    kubo = FakeKubo(b"")
    _, url = await serve(kubo)
    await kubo.stop()  # nothing listens on its port any more
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 503


async def test_a_client_that_leaves_midway_ends_the_relay(serve: Any) -> None:
    size = 8 << 20  # more than the sockets between them buffer
    sent, url = await serve(FakeKubo(os.urandom(size)), size)
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 200
            await resp.content.readexactly(100_000)
        # Leaving the block without reading the rest closes the connection.

        async def relay_ended() -> bool:
            return bool(sent)

        await wait_until("the relay to end", relay_ended, timeout_s=10, every_s=0.01)
    assert 100_000 <= sent[0] < size


@pytest.mark.parametrize("stage", ["opening", "opened", "failed"])
async def test_a_discarded_early_cat_closes_its_connection(stage: str) -> None:
    kubo = FakeKubo(os.urandom(SIZE), status=500 if stage == "failed" else 200)
    store = KuboClient(await kubo.start(), timeout_s=5)
    try:
        cat = store.start_cat("bafy")
        if stage != "opening":
            await asyncio.wait([cat])
        discard_cat(cat)
        await asyncio.wait([cat])
        await asyncio.sleep(0)  # the done callback runs on the next turn of the loop
        if stage == "opened":
            assert cat.result().sock.fileno() == -1  # closed
        elif stage == "opening":
            assert cat.cancelled()
    finally:
        await store.close()
        await kubo.stop()


async def test_bare_connections_to_kubo_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """cat_socket connections (held while a chunk is relayed) are limited like aiohttp's
    pool: a third waits until one of two is closed, and a discarded waiter holds none."""
    monkeypatch.setattr("ipfs.kubo._BARE_LIMIT", 2)
    kubo = FakeKubo(os.urandom(1000))
    store = KuboClient(await kubo.start(), timeout_s=5)
    try:
        first, second = store.start_cat("bafy"), store.start_cat("bafy")
        held = [await first, await second]
        third, fourth = store.start_cat("bafy"), store.start_cat("bafy")
        # A negative check: time in which a connection, had it been allowed, would be made
        # (passes whatever the timing if the limit holds, so it cannot be flaky).
        await asyncio.sleep(0.05)
        assert not third.done() and len(kubo.request_lines) == 2
        discard_cat(fourth)  # cancelled while waiting: takes no connection
        held[0].close()
        body = await asyncio.wait_for(third, 5)
        assert len(kubo.request_lines) == 3
        body.close()
        body.close()  # a second close gives nothing back twice
        held[1].close()
        async with store.cat_socket("bafy") as again, store.cat_socket("bafy") as more:
            assert again.length == more.length == 1000
    finally:
        await store.close()
        await kubo.stop()


@pytest.mark.parametrize("size", [SIZE, 1000], ids=["3x64k", "small"])
async def test_a_run_of_blocks_is_spliced_one_after_another(aiohttp_server: Any, size: int) -> None:
    """stream_blocks on the spliced path: each block from its own kubo connection (the next
    one opened while one is relayed), under the run's total length, the connection to the
    client still usable after it."""
    data = os.urandom(size)
    kubo = FakeKubo(data)
    store = KuboClient(await kubo.start(), timeout_s=5)
    sent: list[int] = []
    app = web.Application(middlewares=[problem_middleware(5)])

    async def handler(request: web.Request) -> web.StreamResponse:
        cat = early_cat(request, store, "b0")
        blocks = [(f"b{i}", size) for i in range(3)]
        response, n = await stream_blocks(request, store, blocks, {}, cat)
        sent.append(n)
        return response

    app.router.add_get("/run", handler)
    server = await aiohttp_server(app)
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(2):
                async with session.get(server.make_url("/run")) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Length"] == str(3 * size)
                    assert await resp.read() == data * 3
        assert sent == [3 * size] * 2
        cats = [f"POST /api/v0/cat?arg=b{i} HTTP/1.0" for i in range(3)]
        assert kubo.request_lines == cats * 2  # the bare path, block by block
    finally:
        await store.close()
        await kubo.stop()
