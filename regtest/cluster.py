"""A 3-peer IPFS Cluster on loopback, each peer with its own kubo.

One shared secret, CRDT consensus, every peer bootstrapped to peer 0, mDNS off, every
listener on 127.0.0.1 at a port picked free at start, peers pinged every 2 s (so a dead
peer is noticed quickly). The kubo nodes are swarm-connected to each other so that a
peer told to pin a CID fetches its blocks over bitswap from whichever kubo has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from regtest.build import build, build_cluster
from regtest.kubo import KuboNode, start_kubo
from regtest.process import ManagedProcess, free_port
from regtest.waiting import NetworkError, wait_process_ready, wait_until

PEERS = 3
MONITOR_PING_INTERVAL = "2s"
METRIC_TTL = "4s"


@dataclass
class ClusterPeer:
    index: int
    path: Path
    kubo: KuboNode
    process: ManagedProcess
    peer_id: str
    swarm_port: int
    rest_port: int

    @property
    def name(self) -> str:
        return f"cluster{self.index}"

    @property
    def rest_url(self) -> str:
        """The cluster REST API (pins, peers, allocations) of this peer."""
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def swarm_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    def running(self) -> bool:
        return self.process.running() and self.kubo.process.running()

    def describe(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "rest_url": self.rest_url,
            "kubo_api_url": self.kubo.api_url,
        }


def json_values(text: str) -> list[Any]:
    """The REST API streams lists as one JSON object after another; older ones as an array."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        value, end = decoder.raw_decode(text, pos)
        values.extend(value if isinstance(value, list) else [value])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


def _localise(cfg: dict[str, Any], kubo: KuboNode, secret: str, swarm: int, rest: int) -> None:
    """Edits a freshly initialised service.json for a private loopback cluster."""
    cluster = cfg["cluster"]
    cluster["secret"] = secret
    cluster["listen_multiaddress"] = [f"/ip4/127.0.0.1/tcp/{swarm}"]
    cluster["mdns_interval"] = "0s"
    cluster["monitor_ping_interval"] = MONITOR_PING_INTERVAL
    cluster["peer_watch_interval"] = "2s"
    api = cfg["api"]
    api["restapi"]["http_listen_multiaddress"] = f"/ip4/127.0.0.1/tcp/{rest}"
    # Unused listeners still bind: keep them on loopback at a free port too.
    api["ipfsproxy"]["listen_multiaddress"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
    api["ipfsproxy"]["node_multiaddress"] = kubo.api_multiaddr
    api["pinsvcapi"]["http_listen_multiaddress"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
    ipfshttp = cfg["ipfs_connector"]["ipfshttp"]
    ipfshttp["node_multiaddress"] = kubo.api_multiaddr
    ipfshttp["connect_swarms_delay"] = "1s"  # default 30s; we also connect them ourselves
    # A peer can be allocated pins only once the others hold its metrics. They are sent
    # every TTL/2 and the first, sent at start, goes out before pubsub has any peers:
    # with the default 30s TTL a new cluster could allocate to one peer for 15 s.
    for informer in cfg.get("informer", {}).values():
        if "metric_ttl" in informer:
            informer["metric_ttl"] = METRIC_TTL


async def _kubo_id(session: aiohttp.ClientSession, kubo: KuboNode) -> tuple[str, list[str]]:
    async with session.post(f"{kubo.api_url}/api/v0/id") as resp:
        data = await resp.json()
    return str(data["ID"]), [str(a) for a in data.get("Addresses") or []]


async def connect_kubo_swarms(kubos: list[KuboNode]) -> None:
    """Connects every kubo to every other, so bitswap can find blocks without routing."""
    async with aiohttp.ClientSession() as session:
        ids = [await _kubo_id(session, k) for k in kubos]
        for i, kubo in enumerate(kubos):
            for j, (peer_id, addrs) in enumerate(ids):
                if i == j or not addrs:
                    continue
                tcp = next((a for a in addrs if "/tcp/" in a and "/ws" not in a), addrs[0])
                target = tcp if "/p2p/" in tcp else f"{tcp}/p2p/{peer_id}"
                async with session.post(
                    f"{kubo.api_url}/api/v0/swarm/connect", params={"arg": target}
                ) as resp:
                    if resp.status != 200:
                        raise NetworkError(f"kubo swarm connect failed: {await resp.text()}")


class Cluster:
    """Started by Network.start(cluster=True); see the module docstring."""

    def __init__(self, root: Path, ipfs: Path, bin_dir: Path, log: bool = True):
        self.root = root
        self.ipfs = ipfs
        self.service = bin_dir / "ipfs-cluster-service"
        self.ctl = bin_dir / "ipfs-cluster-ctl"
        self.log = log
        self.secret = secrets.token_hex(32)
        self.kubos: list[KuboNode] = []
        self.peers: list[ClusterPeer] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, root: Path, log: bool = False) -> AsyncIterator[Cluster]:
        """A cluster of its own, without the chain: for tests that kill peers, so the
        session network's cluster stays whole."""
        bin_dir = await asyncio.to_thread(build)
        cluster_bin = await asyncio.to_thread(build_cluster)
        cluster = cls(root, bin_dir / "ipfs", cluster_bin, log=log)
        try:
            await cluster.start()
            yield cluster
        finally:
            await cluster.stop()

    def processes(self) -> list[ManagedProcess]:
        return [p.process for p in self.peers] + [k.process for k in self.kubos]

    async def _run(self, env: dict[str, str], *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(self.service),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise NetworkError(f"ipfs-cluster-service {args[0]} failed: {out.decode()[-800:]}")
        return out.decode()

    async def _prepare(self, index: int, kubo: KuboNode) -> ClusterPeer:
        path = self.root / f"cluster{index}"
        env = {"IPFS_CLUSTER_PATH": str(path), "PATH": "/usr/bin:/bin", "HOME": str(self.root)}
        await self._run(env, "init", "--consensus", "crdt", "--datastore", "pebble")
        service_json = path / "service.json"
        cfg = json.loads(service_json.read_text())
        swarm, rest = free_port(), free_port()
        _localise(cfg, kubo, self.secret, swarm, rest)
        service_json.write_text(json.dumps(cfg, indent=2))
        peer_id = str(json.loads((path / "identity.json").read_text())["id"])
        process = ManagedProcess(
            f"cluster{index}",
            [str(self.service), "daemon"],
            self.root / f"cluster{index}.out",
            env=env,
        )
        return ClusterPeer(index, path, kubo, process, peer_id, swarm, rest)

    async def start(self) -> None:
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                start_kubo(
                    self.ipfs,
                    self.root / f"cluster{i}-kubo",
                    self.root / f"cluster{i}-kubo.out",
                    name=f"cluster{i}-kubo",
                    offline=False,
                )
                for i in range(PEERS)
            ),
            return_exceptions=True,
        )
        self.kubos = [k for k in results if isinstance(k, KuboNode)]  # stop() ends these
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await connect_kubo_swarms(self.kubos)
        self.peers = list(
            await asyncio.gather(*(self._prepare(i, k) for i, k in enumerate(self.kubos)))
        )
        # Without a public DHT a peer that joined through peer 0 cannot look the others'
        # addresses up ("routing: not found"); every peer starts knowing them instead.
        for peer in self.peers:
            service_json = peer.path / "service.json"
            cfg = json.loads(service_json.read_text())
            cfg["cluster"]["peer_addresses"] = [
                other.swarm_multiaddr for other in self.peers if other is not peer
            ]
            service_json.write_text(json.dumps(cfg, indent=2))
        first = self.peers[0]
        await first.process.start()
        await wait_process_ready(first.process, "cluster peer 0", self._answers(first), 60)
        for peer in self.peers[1:]:
            peer.process.argv += ["--bootstrap", first.swarm_multiaddr]
            await peer.process.start()
        for peer in self.peers[1:]:
            await wait_process_ready(peer.process, peer.name, self._answers(peer), 60)
        await wait_until("every cluster peer to see all the others", self._all_see_all, 60, 0.5)
        if self.log:
            print(
                f"[regtest] IPFS Cluster of {PEERS} peers ready in "
                f"{time.monotonic() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    def _answers(self, peer: ClusterPeer) -> Any:
        async def check() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{peer.rest_url}/id") as resp,
            ):
                return resp.status == 200

        return check

    async def peer_ids_seen_by(self, peer: ClusterPeer) -> set[str]:
        """The cluster peers `peer` lists in GET /peers (those it can reach right now)."""
        async with aiohttp.ClientSession() as session, session.get(f"{peer.rest_url}/peers") as r:
            text = await r.text()
        return {
            str(item["id"]) for item in json_values(text) if not item.get("error") and "id" in item
        }

    async def _all_see_all(self) -> bool:
        """Every peer lists every other and holds the allocation metrics of all of them."""
        wanted = {p.peer_id for p in self.peers}
        for peer in self.peers:
            if await self.peer_ids_seen_by(peer) != wanted:
                return False
            for metric in self.allocation_metrics:
                if await self.metric_peers(peer, metric) != wanted:
                    return False
        return True

    @property
    def allocation_metrics(self) -> list[str]:
        """The metrics the allocator ranks peers by (from peer 0's service.json)."""
        cfg = json.loads((self.peers[0].path / "service.json").read_text())
        return [str(m) for m in cfg["allocator"]["balanced"]["allocate_by"]]

    async def metric_peers(self, peer: ClusterPeer, metric: str) -> set[str]:
        """The peers whose current `metric` `peer` holds (GET /monitor/metrics/{name})."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{peer.rest_url}/monitor/metrics/{metric}") as resp,
        ):
            text = await resp.text()
        return {str(m["peer"]) for m in json_values(text) if isinstance(m, dict) and "peer" in m}

    async def kill_peer(self, index: int) -> ClusterPeer:
        """kill -9 of one cluster peer and its kubo, as a crashed machine would look."""
        peer = self.peers[index]
        await asyncio.gather(peer.process.kill(), peer.kubo.process.kill())
        if self.log:
            print(f"[regtest] killed cluster peer {index} and its kubo", file=sys.stderr)
        return peer

    async def stop(self) -> None:
        # Cluster peers first: they talk to their kubo while shutting down.
        await asyncio.gather(*(peer.process.stop() for peer in self.peers))
        await asyncio.gather(*(kubo.process.stop() for kubo in self.kubos))

    def describe(self) -> list[dict[str, Any]]:
        return [peer.describe() for peer in self.peers]

    def gateway_settings(self, local: int = 0) -> dict[str, Any]:
        """GatewayConfig fields for a gateway on peer ``local``'s machine, storing in this
        cluster: that peer's kubo read first, every peer's REST API and kubo after it."""
        first = self.peers[local]
        others = [p for p in self.peers if p is not first]
        return {
            "ipfs_backend": "cluster",
            "kubo_api_url": first.kubo.api_url,
            "cluster": {
                "rest_urls": [p.rest_url for p in [first, *others]],
                "kubo_api_urls": [p.kubo.api_url for p in others],
            },
        }
