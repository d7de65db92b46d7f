"""The vault API on a real gateway: wrapped keys, compare-and-set writes, the long-poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.crypto import b64url_encode
from storage.vault import (
    MIN_MEMLIMIT,
    MIN_OPSLIMIT,
    new_master_key,
    new_object_id,
    wrap_with_password,
)
from tests.support import bearer, create_account

pytestmark = pytest.mark.integration


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_wrapped_key_is_stored_once_and_checked(
    gateway_url: str, session: aiohttp.ClientSession
) -> None:
    account, key = await create_account(session, gateway_url)
    wrap = wrap_with_password(
        new_master_key(), "pw", account, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
    )
    url = f"{gateway_url}/v1/vault/keys/password"
    body = {"wrapped": wrap.to_json_dict(), "create_only": True}
    async with session.put(url, json=body, headers=bearer(key)) as resp:
        assert resp.status == 201, await resp.text()
    async with session.put(url, json=body, headers=bearer(key)) as resp:
        assert resp.status == 409  # a second device's `vault init` cannot replace the key
    async with session.get(url, headers=bearer(key)) as resp:
        assert (await resp.json())["wrapped"] == wrap.to_json_dict()
    _, other_key = await create_account(session, gateway_url)
    async with session.put(url, json=body, headers=bearer(other_key)) as resp:
        assert resp.status == 400  # names another account
        assert (await resp.json())["type"].endswith("/bad-wrapped-key")
    async with session.get(url, headers=bearer(other_key)) as resp:
        assert resp.status == 404
    async with session.get(f"{gateway_url}/v1/vault") as resp:
        assert resp.status == 401


async def test_compare_and_set_and_long_poll(
    gateway_url: str, session: aiohttp.ClientSession
) -> None:
    _, key = await create_account(session, gateway_url)
    h = bearer(key)
    objects = f"{gateway_url}/v1/vault/objects"
    oid = new_object_id()
    write = {"if_counter": 0, "put": [{"id": oid, "data": b64url_encode(b"sealed-1")}]}
    async with session.post(objects, json=write, headers=h) as resp:
        assert resp.status == 200 and (await resp.json())["counter"] == 1
    async with session.post(objects, json=write, headers=h) as resp:  # stale counter
        assert resp.status == 409
        assert (await resp.json())["counter"] == 1

    async def poll() -> tuple[float, dict[str, object]]:
        async with session.get(
            f"{gateway_url}/v1/vault/changes?since=1&wait=30", headers=h
        ) as resp:
            assert resp.status == 200
            return time.monotonic(), await resp.json()

    waiter = asyncio.create_task(poll())
    await asyncio.sleep(0.5)  # let the poll park on the gateway
    assert not waiter.done()
    write = {"if_counter": 1, "put": [{"id": oid, "data": b64url_encode(b"sealed-2")}]}
    async with session.post(objects, json=write, headers=h) as resp:
        assert resp.status == 200
    written = time.monotonic()
    woke, changes = await asyncio.wait_for(waiter, 10)
    assert woke - written < 2.0
    assert changes["counter"] == 2
    assert changes["objects"] == [{"id": oid, "counter": 2, "data": b64url_encode(b"sealed-2")}]
    async with session.get(f"{gateway_url}/v1/vault?x=1", headers=h) as resp:
        info = await resp.json()
    assert info["counter"] == 2 and info["keep_versions"] >= 1


async def test_bad_batches_are_4xx(gateway_url: str, session: aiohttp.ClientSession) -> None:
    _, key = await create_account(session, gateway_url)
    objects = f"{gateway_url}/v1/vault/objects"
    for body in (
        {"if_counter": 0},
        {"if_counter": 0, "put": [{"id": "../etc", "data": "AA"}]},
        {"if_counter": 0, "put": [{"id": new_object_id(), "data": "A="}]},
        {"if_counter": -1, "delete": [new_object_id()]},
    ):
        async with session.post(objects, json=body, headers=bearer(key)) as resp:
            assert resp.status == 400, body
            assert resp.content_type == "application/problem+json"
