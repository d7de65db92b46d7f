"""ipfs/kubo.py against the regtest kubo: every call it offers, and its errors."""

from __future__ import annotations

import os

import aiohttp
import pytest

from ipfs.errors import IpfsError, IpfsUnavailable
from ipfs.kubo import KuboClient
from regtest.network import Network
from regtest.process import free_port

pytestmark = pytest.mark.integration


async def pinned(api_url: str) -> set[str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{api_url}/api/v0/pin/ls", params={"type": "recursive"}) as resp,
    ):
        return set((await resp.json())["Keys"])


async def test_add_cat_stat_pin_unpin(network: Network) -> None:
    assert network.kubo is not None
    url = network.kubo.api_url
    data = os.urandom(1_048_616)
    async with KuboClient(url) as kubo:
        assert (await kubo.version()).startswith("0.42")
        cid = await kubo.add(data)
        assert cid.startswith("bafk") or cid.startswith("bafy")  # CIDv1
        assert await kubo.cat(cid) == data
        assert await kubo.stat_size(cid) == len(data)
        assert cid in await pinned(url)
        await kubo.pin_rm(cid)
        assert cid not in await pinned(url)
        await kubo.pin_rm(cid)  # unpinning twice is not an error
        await kubo.pin_add(cid)
        assert cid in await pinned(url)
        with pytest.raises(IpfsError):
            await kubo.cat("not-a-cid")


async def test_a_kubo_that_is_not_there_is_unavailable() -> None:
    async with KuboClient(f"http://127.0.0.1:{free_port()}", timeout_s=5) as kubo:
        with pytest.raises(IpfsUnavailable):
            await kubo.version()


@pytest.mark.parametrize("size", [0, 1, 262_144, 1_048_616], ids=lambda n: f"{n}B")
async def test_the_bare_add_stores_what_a_form_post_stores(network: Network, size: int) -> None:
    """KuboClient.add over plain HTTP sends its request in one write (ipfs/kubo_socket.py):
    the same bytes as aiohttp's multipart form, so the same CID, pinned, readable back."""
    assert network.kubo is not None
    url = network.kubo.api_url
    data = os.urandom(size)
    async with KuboClient(url) as kubo:
        assert kubo.splices
        cid = await kubo.add(data)
        form = aiohttp.FormData()
        form.add_field("file", data, filename="chunk", content_type="application/octet-stream")
        params = {"cid-version": "1", "pin": "false", "quieter": "true"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{url}/api/v0/add", params=params, data=form) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json(content_type=None))["Hash"] == cid
        assert await kubo.cat(cid) == data
        assert cid in await pinned(url)


async def test_a_bare_add_to_a_kubo_that_is_not_there_is_unavailable() -> None:
    async with KuboClient(f"http://127.0.0.1:{free_port()}", timeout_s=5) as kubo:
        with pytest.raises(IpfsUnavailable):
            await kubo.add(b"chunk")
