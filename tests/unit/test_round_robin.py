"""tests/round_robin.py against small aiohttp backends on loopback: turns, headers both
ways, X-Forwarded-For, streamed bodies, a dead backend skipped, a body cut short."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from regtest.process import free_port
from tests.round_robin import RoundRobinProxy, round_robin

BIG = 5 * 1024 * 1024 + 7


async def _backend(name: str) -> tuple[web.AppRunner, str]:
    async def echo(request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        size = 0
        async for piece in request.content.iter_any():
            digest.update(piece)
            size += len(piece)
        seen = {
            "backend": name,
            "host": request.host,
            "authorization": request.headers.get("Authorization"),
            "forwarded_for": request.headers.getall("X-Forwarded-For", []),
            "size": size,
            "sha256": digest.hexdigest(),
            "query": request.rel_url.raw_query_string,
        }
        headers = {"WWW-Authenticate": 'L402 macaroon="m", invoice="i"'}
        return web.json_response(seen, status=402, headers=headers)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = BIG
        await response.prepare(request)
        for offset in range(0, BIG, 1 << 20):
            await response.write(bytes([offset % 251]) * min(1 << 20, BIG - offset))
        await response.write_eof()
        return response

    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1 << 20
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.abort()  # a process killed mid-body
        return response

    async def raw(request: web.Request) -> web.StreamResponse:
        return web.Response(text=request.rel_url.raw_path)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/raw/{rest:[\\s\\S]*}", raw)
    app.router.add_get("/big", big)
    app.router.add_get("/short", short)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def two() -> AsyncIterator[tuple[list[web.AppRunner], RoundRobinProxy]]:
    a, url_a = await _backend("a")
    b, url_b = await _backend("b")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with round_robin([url_a, dead, url_b]) as proxy:
        yield [a, b], proxy
    await a.cleanup()
    await b.cleanup()


async def test_turns_skip_a_dead_backend_and_headers_pass_both_ways(
    two: tuple[list[web.AppRunner], RoundRobinProxy],
) -> None:
    _, proxy = two
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            async with session.get(
                URL(f"{proxy.url}/echo?x=1&y=%2F", encoded=True),
                headers={
                    "Authorization": "L402 mac:pre",
                    "Host": "alpha.example",
                    "X-Forwarded-For": "203.0.113.9",
                },
            ) as resp:
                assert resp.status == 402
                assert resp.headers["WWW-Authenticate"] == 'L402 macaroon="m", invoice="i"'
                seen.append(await resp.json())
    # a, dead→b, b, a, dead→b, b: nobody gets an error, the dead one gets nothing.
    assert [s["backend"] for s in seen] == ["a", "b", "b", "a", "b", "b"]
    first = seen[0]
    assert first["host"] == "alpha.example"
    assert first["authorization"] == "L402 mac:pre"
    assert first["forwarded_for"] == ["203.0.113.9, 127.0.0.1"]
    assert first["query"] == "x=1&y=%2F"
    assert sum(proxy.served.values()) == 6 and len(proxy.served) == 2


async def test_paths_pass_as_they_came_even_ones_a_route_pattern_would_not_match(
    two: tuple[list[web.AppRunner], RoundRobinProxy],
) -> None:
    _, proxy = two
    path = "/raw/BJ%C2%93%0A/K%F4%8E%A1"  # a newline, and bytes that are not UTF-8
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(proxy.url + path, encoded=True)) as resp:
            assert resp.status == 200
            assert await resp.text() == path


async def test_bodies_stream_through_whole(
    two: tuple[list[web.AppRunner], RoundRobinProxy],
) -> None:
    _, proxy = two
    payload = bytes(range(256)) * (BIG // 256)
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{proxy.url}/echo", data=payload) as resp:
            seen = await resp.json()
        assert seen["size"] == len(payload)
        assert seen["sha256"] == hashlib.sha256(payload).hexdigest()
        assert seen["forwarded_for"] == ["127.0.0.1"]
        async with session.get(f"{proxy.url}/big") as resp:
            assert resp.content_length == BIG
            body = await resp.read()
    assert len(body) == BIG and body[-1] == ((BIG - 1) // (1 << 20) << 20) % 251


async def test_a_body_cut_short_by_its_backend_is_cut_short_to_the_client(
    two: tuple[list[web.AppRunner], RoundRobinProxy],
) -> None:
    _, proxy = two
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/short") as resp:
            assert resp.status == 200 and resp.content_length == 1 << 20
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        # The proxy itself carries on.
        async with session.get(f"{proxy.url}/echo") as resp:
            assert resp.status == 402
