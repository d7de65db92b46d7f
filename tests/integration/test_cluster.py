"""The 3-peer IPFS Cluster of the regtest network: replicated pins, and a peer's death.

Runs only when asked (BITCACHE_CLUSTER=1, as `make test-scale` sets it): the session
network then includes the cluster. The kill test runs on a cluster of its own so the
session's stays whole for the tests after it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from regtest.cluster import Cluster, ClusterPeer, json_values
from regtest.network import Network, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("BITCACHE_CLUSTER") != "1",
        reason="IPFS Cluster tests run with BITCACHE_CLUSTER=1 (make test-scale)",
    ),
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def add_to_one_kubo(http: aiohttp.ClientSession, peer: ClusterPeer, data: bytes) -> str:
    """Adds bytes to one peer's kubo without pinning them: only the cluster decides."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename="blob")
    async with http.post(
        f"{peer.kubo.api_url}/api/v0/add",
        params={"cid-version": "1", "pin": "false"},
        data=form,
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["Hash"])


async def pin_status(http: aiohttp.ClientSession, peer: ClusterPeer, cid: str) -> dict[str, Any]:
    async with http.get(f"{peer.rest_url}/pins/{cid}") as resp:
        assert resp.status == 200, await resp.text()
        status: dict[str, Any] = await resp.json()
        return status


def pinned_on(status: dict[str, Any]) -> set[str]:
    return {pid for pid, info in status.get("peer_map", {}).items() if info["status"] == "pinned"}


async def pin(
    http: aiohttp.ClientSession, peer: ClusterPeer, cid: str, rmin: int, rmax: int
) -> dict[str, Any]:
    async with http.post(
        f"{peer.rest_url}/pins/{cid}",
        params={"replication-min": str(rmin), "replication-max": str(rmax), "name": "test"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def kubo_pins(http: aiohttp.ClientSession, peer: ClusterPeer, cid: str) -> bool:
    async with http.post(
        f"{peer.kubo.api_url}/api/v0/pin/ls", params={"arg": cid, "type": "recursive"}
    ) as resp:
        return resp.status == 200 and cid in (await resp.json()).get("Keys", {})


async def test_a_pin_with_replication_2_to_3_is_pinned_on_at_least_two_peers(
    network: Network, http: aiohttp.ClientSession
) -> None:
    cluster = network.cluster
    assert cluster is not None and len(cluster.peers) == 3
    holder, asked = cluster.peers[0], cluster.peers[1]
    data = os.urandom(700_000)  # several blocks
    cid = await add_to_one_kubo(http, holder, data)
    assert not await kubo_pins(http, holder, cid)  # control: nothing pinned it yet

    # Asked through another peer than the one holding the blocks: the others fetch them.
    body = await pin(http, asked, cid, 2, 3)
    assert 2 <= len(body["allocations"]) <= 3

    async def replicated() -> bool:
        return len(pinned_on(await pin_status(http, asked, cid))) >= 2

    await wait_until("the pin to reach two peers", replicated, 60, every_s=0.5)
    status = await pin_status(http, cluster.peers[2], cid)  # every peer knows the pin state
    pinned = pinned_on(status)
    assert len(pinned) >= 2
    assert pinned <= set(body["allocations"])
    by_id = {p.peer_id: p for p in cluster.peers}
    for peer_id in pinned:  # the cluster's word checked against each kubo itself
        assert await kubo_pins(http, by_id[peer_id], cid)
        async with http.post(
            f"{by_id[peer_id].kubo.api_url}/api/v0/cat", params={"arg": cid}
        ) as resp:
            assert await resp.read() == data


async def test_killing_a_peer_and_its_kubo_leaves_the_pin_on_the_others(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with Cluster.running(tmp_path) as cluster:
        first, _, victim = cluster.peers
        data = os.urandom(300_000)
        cid = await add_to_one_kubo(http, first, data)
        await pin(http, first, cid, 2, 3)

        async def on_all() -> bool:
            return len(pinned_on(await pin_status(http, first, cid))) == 3

        await wait_until("the pin on all three peers", on_all, 60, every_s=0.5)

        await cluster.kill_peer(2)
        assert not victim.running()

        async def noticed() -> bool:
            return victim.peer_id not in await cluster.peer_ids_seen_by(first)

        await wait_until("peer 0 to notice peer 2 is gone", noticed, 30, every_s=0.5)
        status = await pin_status(http, first, cid)
        # The dead peer's allocation is reported as not pinned; the two others still are.
        assert status["peer_map"][victim.peer_id]["status"] != "pinned"
        assert pinned_on(status) == {p.peer_id for p in cluster.peers[:2]}
        async with http.post(f"{first.kubo.api_url}/api/v0/cat", params={"arg": cid}) as r:
            assert await r.read() == data


async def test_peers_lists_every_peer_from_every_peer(
    network: Network, http: aiohttp.ClientSession
) -> None:
    cluster = network.cluster
    assert cluster is not None
    wanted = {p.peer_id for p in cluster.peers}
    for peer in cluster.peers:
        async with http.get(f"{peer.rest_url}/peers") as resp:
            listed = {item["id"] for item in json_values(await resp.text())}
        assert listed == wanted
