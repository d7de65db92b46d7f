"""A complete private Lightning network on 127.0.0.1: btcd, LND nodes, kubo.

    async with Network.start() as net:
        invoice = await net.node("gateway").client.create_invoice(5_000, "test")
        await net.node("payer").client.pay_invoice(invoice.bolt11, fee_limit_msat=1_000)

Always: LND `gateway` and `payer` with one direct channel (payments between them pay no
fee), and a kubo node. Options:

- `router=True` adds LND `router`, which charges ROUTER_BASE_FEE_MSAT + ROUTER_FEE_PPM
  for every forward, and LND `far_payer`, whose only channel is to `router`:

      payer ──── gateway ──── router ──── far_payer

  so anything `far_payer` pays the gateway, and anything the gateway pays `far_payer`,
  goes through `router` and pays its fee (`router_fee_msat()` says how much). A separate
  node is the robust way to force that route: the payer's direct channel would always
  win, and product code (client, withdrawals) cannot be told which channel to use.
- `cluster=True` adds a 3-peer IPFS Cluster, each peer with its own kubo (regtest/cluster.py);
  `kubo` is then peer 0's kubo (the gateway's own node, whose pins the cluster decides).

Every LND node also gets `gateway.macaroon`, baked with exactly the permissions the
gateway needs (regtest/lnd_admin.py); the sandbox and the tests give the gateway that one.

All state lives in one temporary directory; every port is picked free at start, so two
networks can run side by side; stop() ends exactly the processes start() began.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from regtest.btcd import BtcdRpc
from regtest.build import build, build_cluster
from regtest.cluster import Cluster
from regtest.kubo import KuboNode, start_kubo
from regtest.lnd_admin import GATEWAY_PERMISSIONS, RegtestLndClient
from regtest.process import ManagedProcess, free_port
from regtest.waiting import NetworkError, all_or_none, wait_process_ready, wait_until

__all__ = ["KuboNode", "LndNode", "Network", "NetworkError", "wait_until"]

CORE_NODES = ("gateway", "payer")
ROUTER_NODES = ("router", "far_payer")
# (opener, peer): the opener funds the channel and pushes PUSH_SAT to the peer, so both
# directions have liquidity.
CORE_CHANNELS = (("payer", "gateway"),)
ROUTER_CHANNELS = (("far_payer", "router"), ("router", "gateway"))
CHANNEL_SAT = 16_000_000  # just under the non-wumbo limit of 16 777 215 sat
PUSH_SAT = 6_000_000  # so the gateway side can pay too (withdrawals, refunds)
COINBASE_MATURITY = 100
# Public channels are announced to the graph (and so usable by third parties) at 6 confs.
ANNOUNCE_CONFS = 6
# The router's forwarding fee: base + amount * ppm / 10^6, LND's own formula. Both differ
# from LND's defaults (1000 msat, 1 ppm), so a route priced with them proves the policy.
ROUTER_BASE_FEE_MSAT = 1_500
ROUTER_FEE_PPM = 1_000
POLICY_RESEND_S = 10.0  # gossip here takes well under a second (--trickledelay=50)


def router_fee_msat(amount_msat: int) -> int:
    """The fee `router` charges to forward amount_msat (rounded down, as LND does)."""
    return ROUTER_BASE_FEE_MSAT + amount_msat * ROUTER_FEE_PPM // 1_000_000


@dataclass
class LndNode:
    name: str
    lnddir: Path
    rest_port: int
    grpc_port: int
    p2p_port: int
    process: ManagedProcess
    pubkey: str = ""
    _client: RegtestLndClient | None = field(default=None, repr=False)

    @property
    def rest_url(self) -> str:
        return f"https://127.0.0.1:{self.rest_port}"

    @property
    def grpc_host(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def p2p_host(self) -> str:
        return f"127.0.0.1:{self.p2p_port}"

    @property
    def tls_cert(self) -> Path:
        return self.lnddir / "tls.cert"

    @property
    def admin_macaroon(self) -> Path:
        return self.lnddir / "data/chain/bitcoin/regtest/admin.macaroon"

    @property
    def gateway_macaroon(self) -> Path:
        """Only what the gateway calls (GATEWAY_PERMISSIONS); give the gateway this one."""
        return self.lnddir / "gateway.macaroon"

    @property
    def client(self) -> RegtestLndClient:
        """An admin client: the network itself opens channels, sets fees, bakes macaroons."""
        if self._client is None:
            self._client = RegtestLndClient(self.rest_url, self.tls_cert, self.admin_macaroon)
        return self._client

    def describe(self) -> dict[str, Any]:
        return {
            "rest_url": self.rest_url,
            "grpc_host": self.grpc_host,
            "p2p_host": self.p2p_host,
            "pubkey": self.pubkey,
            "tls_cert": str(self.tls_cert),
            "admin_macaroon": str(self.admin_macaroon),
            "gateway_macaroon": str(self.gateway_macaroon),
        }


def _say(message: str) -> None:
    print(f"[regtest] {message}", file=sys.stderr, flush=True)


class Network:
    """Use `async with Network.start() as net:`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        bin_dir: Path,
        keep_root: bool = False,
        verbose: bool = True,
        *,
        router: bool = False,
        cluster_bin_dir: Path | None = None,
    ):
        self.root = root
        self.bin_dir = bin_dir
        self.keep_root = keep_root
        self.verbose = verbose
        self.with_router = router
        self.node_names = CORE_NODES + (ROUTER_NODES if router else ())
        self.channels = CORE_CHANNELS + (ROUTER_CHANNELS if router else ())
        self.cluster: Cluster | None = (
            Cluster(root, bin_dir / "ipfs", cluster_bin_dir, log=verbose)
            if cluster_bin_dir
            else None
        )
        self.rpc_user = "bitcache"
        self.rpc_pass = secrets.token_hex(16)
        self.btcd_rpc_port = free_port()
        self.btcd_p2p_port = free_port()
        self.btcd_dir = root / "btcd"
        self.btcd: ManagedProcess | None = None
        self.rpc: BtcdRpc | None = None
        self.nodes: dict[str, LndNode] = {}
        self.kubo: KuboNode | None = None
        self.ready_seconds = 0.0
        self._fees_sent_at = 0.0

    # --- lifecycle ------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        root: Path | None = None,
        verbose: bool = True,
        *,
        router: bool = False,
        cluster: bool = False,
    ) -> _NetworkContext:
        """See the module docstring for what `router` and `cluster` add."""
        return _NetworkContext(cls, root, verbose, router=router, cluster=cluster)

    def _log(self, message: str) -> None:
        if self.verbose:
            _say(message)

    def processes(self) -> list[ManagedProcess]:
        procs = [n.process for n in self.nodes.values()]
        if self.kubo and not self.cluster:  # else it is one of the cluster's
            procs.append(self.kubo.process)
        if self.cluster:
            procs += self.cluster.processes()
        if self.btcd:
            procs.append(self.btcd)
        return procs

    async def up(self) -> None:
        started = time.monotonic()
        self.btcd_dir.mkdir(parents=True)
        # kubo and the cluster are independent of the chain: start them alongside.
        side_tasks = [
            asyncio.create_task(self.cluster.start() if self.cluster else self._start_kubo())
        ]
        try:
            await self._start_btcd(mining_addrs=[])
            await all_or_none(*(self._start_lnd(name) for name in self.node_names))
            self._log("lnd nodes up; funding wallets")
            addrs = [await self.node(n).client.new_address() for n in self.node_names]
            # btcd has no generatetoaddress: restart it with the wallets as mining addresses.
            await self._restart_btcd(mining_addrs=addrs)
            await self._mine_until_segwit_active()
            await self.mine(COINBASE_MATURITY)
            await self.wait_synced(timeout_s=120, nudge_every_s=10)
            await self._open_channels(self.channels)
            if self.with_router:
                await self._set_router_fees()
            checks = [
                self._wait_payable("payer", "gateway"),
                self._wait_payable("gateway", "payer"),
            ]
            if self.with_router:
                checks += [
                    self._wait_routed("far_payer", "gateway"),
                    self._wait_routed("gateway", "far_payer"),
                ]
            await all_or_none(*checks)
            await self.wait_idle()
            await asyncio.gather(*side_tasks)
            if self.cluster is not None:
                self.kubo = self.cluster.peers[0].kubo
        except BaseException:
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            raise
        self.ready_seconds = time.monotonic() - started
        parts = ["router"] if self.with_router else []
        parts += ["cluster"] if self.cluster else []
        extra = f" with {' and '.join(parts)}" if parts else ""
        self._log(f"network{extra} ready in {self.ready_seconds:.1f}s (state in {self.root})")

    async def down(self) -> None:
        for node in self.nodes.values():
            if node._client is not None:
                await node._client.close()
        if self.rpc is not None:
            await self.rpc.close()
        # LND first (it talks to btcd), then the rest.
        await asyncio.gather(*(n.process.stop() for n in self.nodes.values()))
        if self.cluster is not None:
            await self.cluster.stop()
        await asyncio.gather(*(p.stop() for p in self.processes()))
        if not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- btcd -----------------------------------------------------------------------

    def _btcd_argv(self, mining_addrs: list[str]) -> list[str]:
        argv = [
            str(self.bin_dir / "btcd"),
            "--regtest",
            "--txindex",
            "--rejectnonstd",
            "--nobanning",
            "--nostalldetect",
            "--trickleinterval=100ms",
            f"--datadir={self.btcd_dir / 'data'}",
            f"--logdir={self.btcd_dir / 'logs'}",
            f"--rpcuser={self.rpc_user}",
            f"--rpcpass={self.rpc_pass}",
            f"--rpclisten=127.0.0.1:{self.btcd_rpc_port}",
            f"--listen=127.0.0.1:{self.btcd_p2p_port}",
            f"--rpccert={self.btcd_dir / 'rpc.cert'}",
            f"--rpckey={self.btcd_dir / 'rpc.key'}",
        ]
        argv += [f"--miningaddr={addr}" for addr in mining_addrs]
        return argv

    async def _start_btcd(self, mining_addrs: list[str]) -> None:
        self.btcd = ManagedProcess(
            "btcd", self._btcd_argv(mining_addrs), self.btcd_dir / "btcd.out"
        )
        await self.btcd.start()
        cert = self.btcd_dir / "rpc.cert"
        self.rpc = BtcdRpc(
            f"https://127.0.0.1:{self.btcd_rpc_port}", self.rpc_user, self.rpc_pass, cert
        )
        rpc = self.rpc

        async def answers() -> bool:
            if not cert.exists():
                return False
            await rpc.call("getblockcount")
            return True

        await self._wait(self.btcd, "btcd RPC", answers, 30)

    async def _restart_btcd(self, mining_addrs: list[str]) -> None:
        assert self.btcd is not None and self.rpc is not None
        await self.rpc.close()
        await self.btcd.stop()
        await self._start_btcd(mining_addrs)

    async def mine(self, blocks: int = 1) -> list[str]:
        """Mines blocks (to the LND wallets once funded) and returns their hashes."""
        assert self.rpc is not None
        hashes: list[str] = await self.rpc.call("generate", blocks)
        return hashes

    async def _mine_until_segwit_active(self) -> None:
        # btcd's regtest activates segwit by BIP9 signalling: about three 144-block
        # windows; LND's funding transactions are segwit and are refused before that.
        assert self.rpc is not None
        for _ in range(10):
            info = await self.rpc.call("getblockchaininfo")
            forks = info.get("bip9_softforks") or info.get("softforks") or {}
            segwit = forks.get("segwit", {}) if isinstance(forks, dict) else {}
            if segwit.get("status") == "active":
                return
            await self.mine(144)
        raise NetworkError(f"segwit did not activate on regtest: {segwit}")

    async def block_count(self) -> int:
        assert self.rpc is not None
        return int(await self.rpc.call("getblockcount"))

    # --- lnd ------------------------------------------------------------------------

    def node(self, name: str) -> LndNode:
        return self.nodes[name]

    async def _start_lnd(self, name: str) -> None:
        lnddir = self.root / name
        lnddir.mkdir()
        rest, grpc, p2p = free_port(), free_port(), free_port()
        argv = [
            str(self.bin_dir / "lnd"),
            f"--lnddir={lnddir}",
            f"--alias={name}",
            "--bitcoin.regtest",
            "--bitcoin.node=btcd",
            f"--btcd.rpchost=127.0.0.1:{self.btcd_rpc_port}",
            f"--btcd.rpcuser={self.rpc_user}",
            f"--btcd.rpcpass={self.rpc_pass}",
            f"--btcd.rpccert={self.btcd_dir / 'rpc.cert'}",
            "--noseedbackup",
            "--nobootstrap",
            "--accept-keysend",
            f"--rpclisten=127.0.0.1:{grpc}",
            f"--restlisten=127.0.0.1:{rest}",
            f"--listen=127.0.0.1:{p2p}",
            "--bitcoin.defaultchanconfs=1",
            "--trickledelay=50",
            "--debuglevel=info",
            "--maxpendingchannels=10",
            "--tlsextradomain=localhost",
        ]
        node = LndNode(
            name, lnddir, rest, grpc, p2p, ManagedProcess(name, argv, lnddir / "lnd.out")
        )
        self.nodes[name] = node
        await node.process.start()

        async def rest_ready() -> bool:
            if not node.admin_macaroon.exists():
                return False
            info = await node.client.get_info()
            node.pubkey = info.pubkey
            return True

        await self._wait(node.process, f"lnd {name}", rest_ready, 60)
        macaroon = await node.client.bake_macaroon(GATEWAY_PERMISSIONS)
        fd = os.open(node.gateway_macaroon, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(macaroon)

    async def restart_node(self, name: str, crash: bool = True) -> None:
        """Stops one LND node (SIGKILL if `crash`, else cleanly) and starts it again on the
        same data directory and ports; returns once payments flow both ways again."""
        node = self.node(name)
        if crash:
            await node.process.kill()
        else:
            await node.process.stop()
        await self.start_node(name)

    async def stop_node(self, name: str) -> None:
        """Stops one LND node cleanly, leaving it down until start_node()."""
        await self.node(name).process.stop()

    async def start_node(self, name: str) -> None:
        """Starts a stopped node again (same data directory, ports and wallet)."""
        node = self.node(name)
        await node.process.start()

        async def rest_ready() -> bool:
            info = await node.client.get_info()
            return info.synced_to_chain and info.num_active_channels > 0

        await self._wait(node.process, f"lnd {name} after a restart", rest_ready, 90)
        for a, b in self.channels:  # each of its channels forwards again, both ways
            if name in (a, b):
                await self._wait_payable(a, b)
                await self._wait_payable(b, a)
        await self.wait_idle()

    async def wait_synced(self, timeout_s: float = 60, nudge_every_s: float = 0) -> None:
        """Waits until every LND node is synced to btcd's tip. With nudge_every_s, mines a
        block that often while some node lags, and restarts a node that stays at the tip
        but unsynced: under load, lnd's wallet can lose the reply to the rescan it asked
        for while up()'s btcd restart dropped its connection ("Received unexpected reply:
        null" in its log) and then waits for it forever; a fresh lnd process asks again.
        A failure names the nodes behind."""
        height = await self.block_count()
        behind: dict[str, str] = {}
        last_nudge = time.monotonic()
        stuck_since: dict[str, float] = {}

        async def synced() -> bool:
            nonlocal height, last_nudge
            if behind and nudge_every_s and time.monotonic() - last_nudge > nudge_every_s:
                last_nudge = time.monotonic()
                await self.mine(1)
                height = await self.block_count()
            behind.clear()
            for name, node in self.nodes.items():
                info = await node.client.get_info()
                if not info.synced_to_chain or info.block_height < height:
                    behind[name] = f"height {info.block_height}/{height}"
                    behind[name] += "" if info.synced_to_chain else ", not synced"
                at_tip_unsynced = info.block_height >= height and not info.synced_to_chain
                if not (at_tip_unsynced and nudge_every_s):
                    stuck_since.pop(name, None)
                elif time.monotonic() - stuck_since.setdefault(name, time.monotonic()) > 3 * (
                    nudge_every_s
                ):
                    self._log(f"lnd {name} is at the tip but not synced: restarting it")
                    stuck_since.pop(name)
                    await self._restart_lnd_process(name)
            return not behind

        try:
            await wait_until("lnd nodes to sync to the chain", synced, timeout_s)
        except NetworkError as exc:
            raise NetworkError(f"{exc}; behind: {behind}") from None

    async def _restart_lnd_process(self, name: str) -> None:
        """The same lnd (data directory, ports, wallet) in a fresh process."""
        node = self.node(name)
        await node.process.stop()
        await node.process.start()

        async def rest_ready() -> bool:
            await node.client.get_info()
            return True

        await self._wait(node.process, f"lnd {name} after a restart", rest_ready, 60)

    async def _request_channel(self, opener: str, peer: str) -> str:
        """Asks `opener` to fund a channel to `peer`; returns the funding txid."""
        a, b = self.node(opener), self.node(peer)

        async def funded() -> bool:
            return await a.client.wallet_balance_sat() > CHANNEL_SAT * 2

        await wait_until(f"{opener} wallet funds", funded, 60)
        await a.client.connect_peer(b.pubkey, b.p2p_host)
        self._log(f"opening {CHANNEL_SAT:,} sat channel {opener} → {peer}")
        txids: list[str] = []

        async def open_once() -> bool:
            # Right after connecting, lnd may still be syncing the peer's gossip.
            txids.append(await a.client.open_channel(b.pubkey, CHANNEL_SAT, PUSH_SAT))
            return True

        await wait_until(f"{opener} → {peer} channel open to be accepted", open_once, 30, 0.5)
        return txids[-1]

    async def _open_channels(self, pairs: tuple[tuple[str, str], ...]) -> None:
        """Opens all channels at once and confirms them in the same blocks."""
        txids = await all_or_none(*(self._request_channel(a, b) for a, b in pairs))
        assert self.rpc is not None
        rpc = self.rpc

        async def in_mempool() -> bool:
            return set(txids) <= set(await rpc.call("getrawmempool"))

        # Mining before btcd has the funding txs would confirm nothing.
        await wait_until("funding transactions in the mempool", in_mempool, 30)
        await self.mine(ANNOUNCE_CONFS)

        async def active() -> bool:
            for opener, peer in pairs:
                for here, there in ((opener, peer), (peer, opener)):
                    chans = await self.node(here).client.list_channels()
                    remote = self.node(there).pubkey
                    if not any(c.get("active") and c.get("remote_pubkey") == remote for c in chans):
                        return False
            return True

        await wait_until("channels to become active", active, 60)

    async def _wait_payable(self, payer: str, payee: str) -> None:
        """A channel can be `active` a moment before its link forwards: prove it with 1 sat."""
        src, dst = self.node(payer).client, self.node(payee).client

        async def pays() -> bool:
            invoice = await dst.create_invoice(1_000, "regtest readiness probe", expiry_s=60)
            await src.pay_invoice(invoice.bolt11, fee_limit_msat=0, timeout_s=10)
            return True

        await wait_until(f"{payer} → {payee} payments to go through", pays, 60, every_s=0.3)

    async def _set_router_fees(self) -> None:
        """Sets the router's fee once its channels are announced to the nodes that route
        through it. lnd 0.21 (seen here): an update made before the announcement is not
        carried into it, nor, once in a while, one made after the edge is in the router's
        own graph but before the announcement proof is complete; the others' graphs then
        keep LND's default fee. _wait_routed sends the policy again if that happens."""
        router = self.node("router").client
        chans = [str(c["chan_id"]) for c in await router.list_channels()]
        peers = [self.node(name).client for name in ("gateway", "far_payer")]

        async def announced() -> bool:
            return all([await n.has_announced_edge(c) for n in peers for c in chans])

        await wait_until("the router's channels to be announced", announced, 60, 0.2)
        await router.update_channel_policy(ROUTER_BASE_FEE_MSAT, ROUTER_FEE_PPM)
        self._fees_sent_at = time.monotonic()

    async def _wait_routed(self, payer: str, payee: str) -> None:
        """Waits until `payer` knows the route through `router` with its fee, then proves
        it with a 1-sat payment that pays exactly that fee."""
        src, dst = self.node(payer), self.node(payee)
        router = self.node("router").pubkey
        probe_msat = 1_000
        want = router_fee_msat(probe_msat)

        async def graph_knows() -> bool:
            routes = await src.client.query_routes(dst.pubkey, probe_msat)
            via = [r for r in routes if r.hop_pubkeys == (router, dst.pubkey)]
            if via and via[0].total_fees_msat != want:  # the fee policy has not arrived yet
                if time.monotonic() - self._fees_sent_at > POLICY_RESEND_S:
                    # A newer update supersedes one that was lost in the announcement.
                    self._log(f"{payer} still sees the default fee; sending the policy again")
                    self._fees_sent_at = time.monotonic()
                    await self.node("router").client.update_channel_policy(
                        ROUTER_BASE_FEE_MSAT, ROUTER_FEE_PPM
                    )
                raise RuntimeError(f"route fee {via[0].total_fees_msat} msat, want {want}")
            return bool(via)

        await wait_until(f"{payer} to see the route to {payee} via router", graph_knows, 90, 0.3)
        fees: list[int] = []

        async def pays() -> bool:
            invoice = await dst.client.create_invoice(probe_msat, "regtest route probe", 60)
            payment = await src.client.pay_invoice(invoice.bolt11, fee_limit_msat=10 * want)
            fees.append(payment.fee_msat)
            return True

        await wait_until(f"{payer} → router → {payee} payments", pays, 60, every_s=0.3)
        if fees[-1] != want:
            raise NetworkError(f"{payer} → {payee} paid fee {fees[-1]} msat, expected {want}")

    @property
    def router_pubkey(self) -> str:
        """The router's node id (requires start(router=True))."""
        if not self.with_router:
            raise NetworkError("this network was started without router=True")
        return self.node("router").pubkey

    async def wait_idle(self, timeout_s: float = 15) -> None:
        """Waits until no HTLC is in flight on any channel, so balances read now are final."""

        async def idle() -> bool:
            for node in self.nodes.values():
                for chan in await node.client.list_channels():
                    if chan.get("pending_htlcs") or int(chan.get("unsettled_balance", 0)):
                        return False
            return True

        await wait_until("channels to settle their HTLCs", idle, timeout_s, every_s=0.05)

    # --- kubo -----------------------------------------------------------------------

    async def _start_kubo(self) -> None:
        self.kubo = await start_kubo(
            self.bin_dir / "ipfs", self.root / "kubo", self.root / "kubo.out", offline=True
        )

    # --- helpers for tests and the sandbox --------------------------------------------

    async def _wait(
        self,
        proc: ManagedProcess,
        what: str,
        check: Callable[[], Awaitable[bool]],
        timeout_s: float,
    ) -> None:
        await wait_process_ready(proc, what, check, timeout_s)

    def describe(self) -> dict[str, Any]:
        """Connection details for other programs (written by `python -m regtest up`)."""
        return {
            "root": str(self.root),
            "btcd": {
                "rpc_url": f"https://127.0.0.1:{self.btcd_rpc_port}",
                "rpc_user": self.rpc_user,
                "rpc_pass": self.rpc_pass,
                "rpc_cert": str(self.btcd_dir / "rpc.cert"),
            },
            "lnd": {name: node.describe() for name, node in self.nodes.items()},
            "kubo": {"api_url": self.kubo.api_url if self.kubo else ""},
            "cluster": self.cluster.describe() if self.cluster else [],
            "pids": {p.name: p.pid for p in self.processes() if p.pid},
        }

    def write_description(self, path: Path, **extra: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe() | extra, indent=2))
        tmp.replace(path)


class _NetworkContext:
    def __init__(
        self, cls: type[Network], root: Path | None, verbose: bool, router: bool, cluster: bool
    ):
        self._cls = cls
        self._root = root
        self._verbose = verbose
        self._router = router
        self._cluster = cluster
        self._net: Network | None = None

    async def __aenter__(self) -> Network:
        bin_dir = await asyncio.to_thread(build)
        cluster_bin = await asyncio.to_thread(build_cluster) if self._cluster else None
        keep = self._root is not None
        root = self._root or Path(tempfile.mkdtemp(prefix="bitcache-regtest-"))
        root.mkdir(parents=True, exist_ok=True)
        self._net = self._cls(
            root,
            bin_dir,
            keep_root=keep,
            verbose=self._verbose,
            router=self._router,
            cluster_bin_dir=cluster_bin,
        )
        try:
            await self._net.up()
        except BaseException as exc:
            # Keep the nodes' logs of a failed start to look at; say where they are.
            self._net.keep_root = self._net.keep_root or isinstance(exc, NetworkError)
            await self._net.down()
            if isinstance(exc, NetworkError):
                raise NetworkError(f"{exc}\n(logs kept in {self._net.root})") from None
            raise
        return self._net

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._net is not None
        await self._net.down()
