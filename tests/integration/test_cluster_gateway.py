"""The gateway on the IPFS Cluster backend (ipfs/cluster.py), against the real 3-peer
cluster: paid downloads, each tenant's replication factor as the cluster records it, a
peer and its kubo killed while every file still downloads, and unpinning cluster-wide.

Runs only when asked (BITCACHE_CLUSTER=1, as `make test-scale` sets it), like
test_cluster.py. The kill test runs on a cluster of its own, so the session's stays whole.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.api import BitcacheClient
from gateway.config import GatewayConfig, ReplicationSettings, TenantSettings
from gateway.server import serve
from regtest.cluster import Cluster, ClusterPeer
from regtest.network import Network, NetworkError, wait_until
from sandbox.run import sandbox_client_config
from tests.conftest import gateway_config
from tests.sql import fetch_all
from tests.support import bearer, create_account, random_bytes, upload_raw

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("BITCACHE_CLUSTER") != "1",
        reason="IPFS Cluster tests run with BITCACHE_CLUSTER=1 (make test-scale)",
    ),
]

MIB = 1 << 20
PRICE_MSAT = 2_000
CHUNK = 64 * 1024
PAIR_HOST = "pair.cluster.test"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def session_cluster(network: Network) -> Cluster:
    assert network.cluster is not None and len(network.cluster.peers) == 3
    return network.cluster


async def chunk_cids(config: GatewayConfig, file_id: str) -> list[str]:
    rows = await fetch_all(config, "SELECT cid FROM chunks WHERE file_id = ? ORDER BY idx", file_id)
    return [str(row[0]) for row in rows]


async def file_cids(config: GatewayConfig) -> list[str]:
    return [str(row[0]) for row in await fetch_all(config, "SELECT cid FROM chunks")]


async def status(http: aiohttp.ClientSession, peer: ClusterPeer, cid: str) -> dict[str, Any]:
    """What the cluster reports for ``cid``, per peer id: {"status": …, "error": …}."""
    async with http.get(f"{peer.rest_url}/pins/{cid}") as resp:
        assert resp.status == 200, await resp.text()
        peer_map: dict[str, Any] = (await resp.json())["peer_map"]
        return peer_map


def pinned_on(peer_map: dict[str, Any]) -> set[str]:
    return {pid for pid, info in peer_map.items() if info["status"] == "pinned"}


async def allocation(
    http: aiohttp.ClientSession, peer: ClusterPeer, cid: str
) -> dict[str, Any] | None:
    """The cluster's pin for ``cid`` (GET /allocations/{cid}); None if it has none."""
    async with http.get(f"{peer.rest_url}/allocations/{cid}") as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        pin: dict[str, Any] = await resp.json()
        return pin


async def kubo_pins(http: aiohttp.ClientSession, peer: ClusterPeer, cid: str) -> bool:
    async with http.post(
        f"{peer.kubo.api_url}/api/v0/pin/ls", params={"arg": cid, "type": "recursive"}
    ) as resp:
        return resp.status == 200 and cid in (await resp.json()).get("Keys", {})


async def wait_pinned(
    http: aiohttp.ClientSession,
    peer: ClusterPeer,
    cids: list[str],
    count: int,
    timeout_s: float = 60,
) -> None:
    seen: dict[str, Any] = {}

    async def done() -> bool:
        for cid in cids:
            seen[cid] = await status(http, peer, cid)
            if len(pinned_on(seen[cid])) != count:
                return False
        return True

    try:
        await wait_until(f"{len(cids)} CIDs pinned on {count} peers", done, timeout_s, every_s=0.5)
    except NetworkError as exc:  # say what the cluster last reported, and what it allocated
        pins = {cid: await allocation(http, peer, cid) for cid in cids}
        raise NetworkError(f"{exc}; last status {seen}; allocations {pins}") from exc


async def test_a_paid_download_from_a_gateway_on_the_cluster(
    network: Network, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = session_cluster(network)
    config = gateway_config(network, tmp_path / "gw", default_price_msat=PRICE_MSAT)
    assert config.ipfs_backend == "cluster"  # the conftest's choice under BITCACHE_CLUSTER=1
    source = tmp_path / "three.bin"
    source.write_bytes(os.urandom(2 * MIB + 4321))
    async with serve(config) as url:
        _, key = await create_account(http, url)
        async with BitcacheClient(sandbox_client_config(network, url, key)) as client:
            link = await client.upload(source, progress=False)
        async with BitcacheClient(sandbox_client_config(network, url)) as client:
            result = await client.download(link.to_url(), tmp_path / "copy.bin", progress=False)
        async with http.get(f"{url}/v1/health") as resp:
            health = await resp.json()
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert result.chunks == 3 and result.paid_msat == 3 * PRICE_MSAT
    assert health["kubo"]["ok"] and health["kubo"]["version"] == "ipfs-cluster 1.1.6"
    # Every chunk is a cluster pin with the default factor, on all three peers (max 3).
    cids = await file_cids(config)
    assert len(cids) == 3
    for cid in cids:
        pin = await allocation(http, cluster.peers[1], cid)
        assert pin is not None and pin["name"] == "bitcache"
        assert (pin["replication_factor_min"], pin["replication_factor_max"]) == (2, 3)
    await wait_pinned(http, cluster.peers[2], cids, 3)


async def test_a_tenants_replication_is_what_the_cluster_pins_with(
    network: Network, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = session_cluster(network)
    config = gateway_config(
        network,
        tmp_path / "gw",
        tenants=[
            TenantSettings(id="default"),  # the cluster's default: 2 to 3
            TenantSettings(
                id="pair", hostnames=[PAIR_HOST], replication=ReplicationSettings(min=2, max=2)
            ),
        ],
    )
    async with serve(config) as url:
        default = await upload_raw(http, url, random_bytes(2 * CHUNK), chunk_size=CHUNK)
        async with aiohttp.ClientSession(headers={"Host": PAIR_HOST}) as pair_http:
            pair = await upload_raw(pair_http, url, random_bytes(2 * CHUNK), chunk_size=CHUNK)
    default_cids = await chunk_cids(config, default.file_id)
    pair_cids = await chunk_cids(config, pair.file_id)
    assert len(default_cids) == len(pair_cids) == 2
    for cids, factor in ((default_cids, (2, 3)), (pair_cids, (2, 2))):
        for cid in cids:
            pin = await allocation(http, cluster.peers[0], cid)
            assert pin is not None
            assert (pin["replication_factor_min"], pin["replication_factor_max"]) == factor
            assert len(pin["allocations"]) == factor[1]  # all three peers are up
    await wait_pinned(http, cluster.peers[0], pair_cids, 2)
    await wait_pinned(http, cluster.peers[0], default_cids, 3)
    # The cluster's word checked against the kubo nodes themselves.
    by_id = {p.peer_id: p for p in cluster.peers}
    for cid in pair_cids:
        holders = pinned_on(await status(http, cluster.peers[0], cid))
        assert [await kubo_pins(http, by_id[p], cid) for p in sorted(by_id)] == [
            p in holders for p in sorted(by_id)
        ]


async def test_deleting_a_file_unpins_it_cluster_wide(
    network: Network, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = session_cluster(network)
    config = gateway_config(network, tmp_path / "gw")
    async with serve(config) as url:
        up = await upload_raw(http, url, random_bytes(3 * CHUNK), chunk_size=CHUNK)
        cids = await chunk_cids(config, up.file_id)
        await wait_pinned(http, cluster.peers[0], cids, 3)
        async with http.delete(f"{url}/v1/files/{up.file_id}", headers=bearer(up.api_key)) as r:
            assert r.status == 200, await r.text()
        # The peer the gateway asked drops the pin at once; the others as CRDT state
        # reaches them, and each kubo when its peer unpins it.
        for cid in cids:
            assert await allocation(http, cluster.peers[0], cid) is None

        async def unpinned_everywhere() -> bool:
            for cid in cids:
                for peer in cluster.peers:
                    if await allocation(http, peer, cid) or await kubo_pins(http, peer, cid):
                        return False
            return True

        await wait_until("every kubo to drop the pins", unpinned_everywhere, 60, every_s=0.5)
        async with http.get(f"{url}/v1/files/{up.file_id}/chunks/0") as resp:
            assert resp.status in (404, 410)


async def test_killing_a_peer_and_its_kubo_leaves_every_file_downloadable(
    network: Network, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    (tmp_path / "cluster").mkdir()
    async with Cluster.running(tmp_path / "cluster") as cluster:
        config = gateway_config(
            network, tmp_path / "gw", default_price_msat=PRICE_MSAT, **cluster.gateway_settings()
        )
        async with serve(config) as url:
            _, key = await create_account(http, url)
            uploader = sandbox_client_config(network, url, key)
            downloader = sandbox_client_config(network, url)
            sources, links = [], []
            async with BitcacheClient(uploader) as client:
                for i in range(3):
                    source = tmp_path / f"f{i}.bin"
                    source.write_bytes(os.urandom(MIB + 1000 * (i + 1)))  # 2 chunks
                    sources.append(source)
                    links.append(await client.upload(source, progress=False))
            cids = await file_cids(config)
            assert len(cids) == 6
            await wait_pinned(http, cluster.peers[1], cids, 3)

            # Peer 0 is the gateway's own: its kubo is read first, its REST API asked first.
            victim = await cluster.kill_peer(0)
            assert not victim.running()
            async with BitcacheClient(downloader) as client:
                for i, (source, link) in enumerate(zip(sources, links, strict=True)):
                    copy = tmp_path / f"copy{i}.bin"
                    result = await client.download(link.to_url(), copy, progress=False)
                    assert copy.read_bytes() == source.read_bytes()
                    assert result.paid_msat == result.chunks * PRICE_MSAT

            # The cluster reports the dead peer's allocations as not pinned, with why.
            survivor = cluster.peers[1]

            async def reported() -> bool:
                for cid in cids:
                    peer_map = await status(http, survivor, cid)
                    if peer_map[victim.peer_id]["status"] == "pinned":
                        return False
                return True

            await wait_until("the cluster to report peer 0's pins", reported, 30, every_s=0.5)
            for cid in cids:
                peer_map = await status(http, survivor, cid)
                assert pinned_on(peer_map) == {p.peer_id for p in cluster.peers[1:]}
                dead = peer_map[victim.peer_id]
                assert dead["status"] == "cluster_error" and dead["error"], dead
            async with http.get(f"{url}/v1/health") as resp:
                assert resp.status == 200 and (await resp.json())["kubo"]["ok"]

            # Uploads go on once the cluster stops counting the dead peer (its metrics
            # expired): two peers left still meet replication min 2.
            async def metrics_expired() -> bool:
                for metric in cluster.allocation_metrics:
                    if victim.peer_id in await cluster.metric_peers(survivor, metric):
                        return False
                return True

            await wait_until("peer 0's metrics to expire", metrics_expired, 30, every_s=0.5)
            late = tmp_path / "late.bin"
            late.write_bytes(os.urandom(MIB + 10))
            async with BitcacheClient(uploader) as client:
                link = await client.upload(late, progress=False)
            async with BitcacheClient(downloader) as client:
                await client.download(link.to_url(), tmp_path / "late-copy.bin", progress=False)
            assert (tmp_path / "late-copy.bin").read_bytes() == late.read_bytes()
            late_cids = set(await file_cids(config)) - set(cids)
            assert len(late_cids) == 2
            # Longer: once a CI run under load took over 60 s here (the exception now says
            # what the cluster last reported, if it happens again).
            await wait_pinned(http, survivor, sorted(late_cids), 2, timeout_s=180)
