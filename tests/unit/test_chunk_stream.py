"""gateway/http/chunk_stream.py: chunks stream from the block store, and a block of the wrong
size is never served as a complete 200.

A fake BlockStore yields pieces (then may fail); a small aiohttp app with the gateway's problem
middleware serves it; aiohttp's own client reads the answer, as Bitcache's client does.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from gateway.http.chunk_stream import stream_block, stream_blocks
from gateway.http.middleware import problem_middleware
from ipfs.errors import IpfsError, IpfsUnavailable
from ipfs.store import BlockStore

SIZE = 3 * 65_536 + 17


class FakeStore:
    """cat_stream yields ``pieces``, then raises ``fail`` if set."""

    def __init__(self, pieces: list[bytes], fail: Exception | None = None) -> None:
        self.pieces = pieces
        self.fail = fail
        self.reads = 0
        self.open_streams = 0  # like kubo answers not yet released

    async def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        self.reads += 1
        self.open_streams += 1
        try:
            for piece in self.pieces:
                yield piece
            if self.fail is not None:
                raise self.fail
        finally:
            self.open_streams -= 1


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


class Served:
    """One app serving ``store`` as a SIZE-byte chunk; records the bytes each answer sent."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.sent: list[int] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[problem_middleware(5)])

        async def handler(request: web.Request) -> web.StreamResponse:
            response, sent = await stream_block(
                request,
                cast(BlockStore, self.store),  # implements only cat_stream, all this needs
                "bafy",
                SIZE,
                {"ETag": '"bafy"'},
            )
            self.sent.append(sent)
            return response

        app.router.add_get("/chunk", handler)
        return app


@pytest.fixture
async def serve(aiohttp_server: Any) -> Any:
    async def start(store: FakeStore) -> tuple[Served, str]:
        served = Served(store)
        server = await aiohttp_server(served.app())
        return served, str(server.make_url("/chunk"))

    return start


async def test_a_whole_block_is_streamed_with_its_length(serve: Any) -> None:
    data = os.urandom(SIZE)
    served, url = await serve(FakeStore(split(data, 5)))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        assert resp.headers["ETag"] == '"bafy"'
        assert resp.content_type == "application/octet-stream"
        assert await resp.read() == data
    assert served.sent == [SIZE]


@pytest.mark.parametrize("wrong", [SIZE - 1000, SIZE + 1], ids=["short", "long"])
async def test_a_wrong_size_in_one_piece_is_a_problem_answer(serve: Any, wrong: int) -> None:
    # The whole block arrived before a byte went out: nothing was promised yet.
    served, url = await serve(FakeStore([os.urandom(wrong)]))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 502
        assert (await resp.json())["type"].endswith("storage-corrupt")
    assert served.sent == []  # raised as a problem


@pytest.mark.parametrize(
    "wrong", [SIZE - 1000, SIZE + 1, SIZE + 70_000], ids=["short", "long", "longer"]
)
async def test_a_wrong_size_midway_is_never_a_complete_200(serve: Any, wrong: int) -> None:
    store = FakeStore(split(os.urandom(wrong), 4))
    served, url = await serve(store)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200  # headers went out with the first piece
        assert resp.headers["Content-Length"] == str(SIZE)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # the body ends short of Content-Length: an error, not a chunk
    assert served.sent[0] < SIZE
    assert store.open_streams == 0  # the storage answer was released, not left to the GC


async def test_storage_failing_midway_cuts_the_connection(serve: Any) -> None:
    data = os.urandom(SIZE)
    served, url = await serve(FakeStore(split(data, 4)[:3], IpfsError("block went missing")))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert 0 < served.sent[0] < SIZE


@pytest.mark.parametrize(
    ("fail", "status"), [(IpfsError("refused"), 502), (IpfsUnavailable("down"), 503)]
)
async def test_storage_failing_before_any_byte_is_a_problem(
    serve: Any, fail: Exception, status: int
) -> None:
    _, url = await serve(FakeStore([], fail))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == status
        assert resp.content_type == "application/problem+json"


async def test_the_connection_stays_usable_after_a_good_chunk(serve: Any) -> None:
    data = os.urandom(SIZE)
    served, url = await serve(FakeStore(split(data, 3)))
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.get(url) as resp:
                assert await resp.read() == data
    assert served.sent == [SIZE] * 3


async def test_head_sends_the_length_without_reading_storage(serve: Any) -> None:
    store = FakeStore([os.urandom(SIZE)])
    _, url = await serve(store)
    async with aiohttp.ClientSession() as session, session.head(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(SIZE)
    assert store.reads == 0


# --- several blocks in one answer (stream_blocks) -----------------------------------------


class PerCid(FakeStore):
    """A FakeStore whose answer depends on the CID: ``stores[cid]``."""

    def __init__(self, stores: dict[str, FakeStore]) -> None:
        super().__init__([])
        self.stores = stores

    async def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        async for piece in self.stores[cid].cat_stream(cid, block):
            yield piece


async def serve_run(
    aiohttp_server: Any, store: FakeStore, cids: list[str]
) -> tuple[list[int], str]:
    sent: list[int] = []
    app = web.Application(middlewares=[problem_middleware(5)])

    async def handler(request: web.Request) -> web.StreamResponse:
        blocks = [(cid, SIZE) for cid in cids]
        response, n = await stream_blocks(request, cast(BlockStore, store), blocks, {})
        sent.append(n)
        return response

    app.router.add_get("/run", handler)
    server = await aiohttp_server(app)
    return sent, str(server.make_url("/run"))


async def test_blocks_go_out_one_after_another_under_their_total_length(
    aiohttp_server: Any,
) -> None:
    data = {cid: os.urandom(SIZE) for cid in "abc"}
    store = PerCid({cid: FakeStore(split(d, 3)) for cid, d in data.items()})
    sent, url = await serve_run(aiohttp_server, store, ["a", "b", "c"])
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(3 * SIZE)
        assert await resp.read() == data["a"] + data["b"] + data["c"]
    assert sent == [3 * SIZE]


@pytest.mark.parametrize("fault", ["short", "failing"])
async def test_a_later_block_gone_wrong_cuts_the_answer_after_the_good_ones(
    aiohttp_server: Any, fault: str
) -> None:
    good = os.urandom(SIZE)
    bad = (
        FakeStore(split(os.urandom(SIZE - 1000), 2))
        if fault == "short"
        else FakeStore(split(os.urandom(SIZE), 3)[:2], IpfsError("block went missing"))
    )
    store = PerCid({"a": FakeStore(split(good, 2)), "b": bad, "c": FakeStore([good])})
    sent, url = await serve_run(aiohttp_server, store, ["a", "b", "c"])
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200  # the head went out with block a
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # never taken for the whole run
    assert SIZE <= sent[0] < 2 * SIZE  # block a whole, block b not
    assert store.stores["c"].reads == 0  # nothing read after the fault
    assert all(s.open_streams == 0 for s in store.stores.values())


async def test_a_first_block_gone_wrong_is_a_problem_answer(aiohttp_server: Any) -> None:
    store = PerCid({"a": FakeStore([os.urandom(SIZE + 1)]), "b": FakeStore([os.urandom(SIZE)])})
    sent, url = await serve_run(aiohttp_server, store, ["a", "b"])
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 502
        assert (await resp.json())["type"].endswith("storage-corrupt")
    assert sent == []
