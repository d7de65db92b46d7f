"""The pure parts of ipfs/cluster.py: replication factors, peer order, error mapping and
the cluster's answers. The store itself runs against a real cluster in
tests/integration/test_cluster_store.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from ipfs.cluster import (
    ClusterStore,
    PeerHealth,
    Replication,
    added_cid,
    cluster_error,
    combined_error,
)
from ipfs.errors import IpfsError, IpfsNotFound, IpfsUnavailable
from regtest.process import free_port


def test_replication_is_checked_and_becomes_the_cluster_options() -> None:
    assert Replication() == Replication(2, 3)
    assert Replication(1, 1).query() == {"replication-min": "1", "replication-max": "1"}
    for bad in ((0, 1), (3, 2), (-1, -1)):
        with pytest.raises(ValueError):
            Replication(*bad)


def test_unreachable_peers_go_last_until_the_cooldown_ends_or_they_answer() -> None:
    now = [100.0]
    health = PeerHealth(cooldown_s=30, clock=lambda: now[0])
    urls = ["a", "b", "c"]
    assert health.order(urls) == urls
    health.unreachable("a")
    health.unreachable("b")
    assert health.order(urls) == ["c", "a", "b"]  # configured order kept within each group
    health.answered("b")
    assert health.order(urls) == ["b", "c", "a"]
    now[0] += 30
    assert health.order(urls) == urls


def test_an_unreachable_peer_makes_the_whole_call_retryable() -> None:
    missing, down, broken = IpfsNotFound("m"), IpfsUnavailable("d"), IpfsError("b")
    assert type(combined_error("cat", [missing, missing])) is IpfsNotFound
    # The peer that is down may be the one holding the block: retry later, not 404/502.
    assert type(combined_error("cat", [missing, down])) is IpfsUnavailable
    assert type(combined_error("cat", [missing, broken])) is IpfsError
    assert type(combined_error("cat", [])) is IpfsUnavailable
    assert "m" in str(combined_error("cat", [missing, down]))


def test_cluster_errors_map_like_kubo_errors() -> None:
    def body(message: str, code: int = 500) -> bytes:
        return json.dumps({"code": code, "message": message}).encode()

    too_few = body("not enough peers to allocate CID. Needed at least: 4.")
    assert type(cluster_error("add", 500, too_few)) is IpfsUnavailable
    assert type(cluster_error("pin", 503, b"gateway down")) is IpfsUnavailable
    assert type(cluster_error("unpin", 404, body("pin is not part of the pinset", 404))) is (
        IpfsNotFound
    )
    refused = cluster_error("add", 400, body("parameter cid-version invalid", 400))
    assert type(refused) is IpfsError and "cid-version invalid" in str(refused)


def test_the_added_cid_is_the_last_output() -> None:
    answer = [
        {"name": "a", "cid": "bafyleaf", "size": 1},
        {"name": "chunk", "cid": "bafyroot", "size": 700158, "allocations": ["p1", "p2"]},
    ]
    assert added_cid(json.dumps(answer).encode()) == "bafyroot"
    for bad in (b"", b"[]", b'{"code": 500}', b"not json"):
        with pytest.raises(IpfsError):
            added_cid(bad)


def test_a_tenant_view_shares_the_connections_but_not_the_factor() -> None:
    store = ClusterStore(["http://c0:9094/"], ["http://k0:5001", "http://k0:5001"])
    view = store.replicated(Replication(3, 3))
    assert view.replication == Replication(3, 3) and store.replication == Replication(2, 3)
    assert view._peers is store._peers
    assert list(store._peers.kubos) == ["http://k0:5001"]  # listed twice, asked once
    with pytest.raises(ValueError):
        ClusterStore([], ["http://k0:5001"])


# -- the store against fake peers: one small aiohttp app per kubo or cluster REST API ----

DATA = bytes(range(256)) * 4096  # 1 MiB


class FakeKubo:
    """A kubo RPC API serving DATA for one CID, offline, optionally breaking mid-stream."""

    def __init__(self, has: bool = True, break_at: int | None = None) -> None:
        self.has, self.break_at = has, break_at
        self.asked: list[dict[str, str]] = []

    async def cat(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(dict(request.query))
        if not self.has:
            missing = {"Message": "block was not found locally (offline)"}
            return web.json_response(missing, status=500)
        offset = int(request.query.get("offset", "0"))
        body = DATA[offset:]
        response = web.StreamResponse(headers={"X-Content-Length": str(len(body))})
        await response.prepare(request)
        # Breaking: the stream ends cleanly but short, as kubo's does (error in a trailer).
        await response.write(body if self.break_at is None else body[: self.break_at])
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v0/cat", self.cat)
        return app


@pytest.fixture
async def serve_apps() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_a_read_broken_mid_stream_resumes_at_the_same_byte_on_the_next_peer(
    serve_apps: Callable[[web.Application], Awaitable[str]],
) -> None:
    first, second = FakeKubo(break_at=300_000), FakeKubo()
    urls = [await serve_apps(first.app()), await serve_apps(second.app())]
    async with ClusterStore([f"http://127.0.0.1:{free_port()}"], urls) as store:
        assert await store.cat("bafyx") == DATA
    assert first.asked == [{"arg": "bafyx", "offline": "true"}]
    assert second.asked == [{"arg": "bafyx", "offset": "300000", "offline": "true"}]


async def test_a_dead_peer_is_skipped_and_then_asked_last(
    serve_apps: Callable[[web.Application], Awaitable[str]],
) -> None:
    lacking, holding = FakeKubo(has=False), FakeKubo()
    dead = f"http://127.0.0.1:{free_port()}"
    urls = [dead, await serve_apps(lacking.app()), await serve_apps(holding.app())]
    async with ClusterStore([dead], urls) as store:
        assert await store.cat("bafyx") == DATA
        assert await store.cat("bafyx") == DATA
        assert [u for u, _ in store._readers()] == [*urls[1:], dead]  # dead one last now
    assert len(lacking.asked) == len(holding.asked) == 2


async def test_nobody_has_it_is_not_found_but_a_dead_peer_makes_it_unavailable(
    serve_apps: Callable[[web.Application], Awaitable[str]],
) -> None:
    lacking = [await serve_apps(FakeKubo(has=False).app()) for _ in range(2)]
    dead = f"http://127.0.0.1:{free_port()}"
    async with ClusterStore([dead], lacking) as store:
        with pytest.raises(IpfsNotFound):
            await store.cat("bafyx")
    async with ClusterStore([dead], [*lacking, dead]) as store:
        with pytest.raises(IpfsUnavailable):
            await store.cat("bafyx")
        with pytest.raises(IpfsUnavailable):  # no REST API answers: 503, not 502
            await store.add(b"x")


async def test_pins_go_to_the_first_rest_api_that_answers(
    serve_apps: Callable[[web.Application], Awaitable[str]],
) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.query)))
        if request.method == "DELETE":
            unknown = {"code": 404, "message": "pin is not part of the pinset"}
            return web.json_response(unknown, status=404)
        return web.json_response({"cid": request.match_info["cid"]})

    app = web.Application()
    app.router.add_route("*", "/pins/{cid}", record)
    rest = await serve_apps(app)
    dead = f"http://127.0.0.1:{free_port()}"
    async with ClusterStore([dead, rest], [dead], Replication(1, 2)) as store:
        await store.replicated(Replication(3, 3)).pin_add("bafyx")
        await store.pin_rm("bafyx")  # not pinned: what was asked
    options = {"replication-min": "3", "replication-max": "3", "name": "bitcache"}
    assert seen == [("POST", "/pins/bafyx", options), ("DELETE", "/pins/bafyx", {})]


async def test_too_few_peers_is_the_clusters_answer_and_not_retried_elsewhere(
    serve_apps: Callable[[web.Application], Awaitable[str]],
) -> None:
    asked: list[str] = []

    def rest(name: str, status: int, message: str) -> web.Application:
        async def add(request: web.Request) -> web.Response:
            asked.append(name)
            return web.json_response({"code": status, "message": message}, status=status)

        app = web.Application()
        app.router.add_post("/add", add)
        return app

    behind_proxy = await serve_apps(rest("proxied", 502, "bad gateway"))
    refusing = await serve_apps(rest("first", 500, "not enough peers to allocate CID"))
    other = await serve_apps(rest("second", 500, "not enough peers to allocate CID"))
    async with ClusterStore([behind_proxy, refusing, other], [other]) as store:
        with pytest.raises(IpfsUnavailable, match="not enough peers"):
            await store.add(b"chunk")
    # A 502 is a peer that is not there: the next is asked; the cluster's refusal is final.
    assert asked == ["proxied", "first"]
