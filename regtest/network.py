"""A complete private Lightning network on 127.0.0.1: btcd, two LND nodes, kubo.

    async with Network.start() as net:
        invoice = await net.node("gateway").client.create_invoice(5_000, "test")
        await net.node("payer").client.pay_invoice(invoice.bolt11, fee_limit_msat=1_000)

All state lives in one temporary directory; every port is picked free at start, so two
networks can run side by side; stop() ends exactly the processes start() began.
"""

from __future__ import annotations

import asyncio
import json
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

import aiohttp

from lightning.errors import LightningError
from lightning.lnd import LndRestClient
from regtest.btcd import BtcdRpc
from regtest.build import build
from regtest.process import ManagedProcess, free_port

NODE_NAMES = ("gateway", "payer")
CHANNEL_SAT = 16_000_000  # just under the non-wumbo limit of 16 777 215 sat
PUSH_SAT = 6_000_000  # so the gateway side can pay too (withdrawals, refunds)
COINBASE_MATURITY = 100


class NetworkError(RuntimeError):
    """The network could not be brought up; the message includes the failing log."""


async def wait_until(
    what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 60, every_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (LightningError, aiohttp.ClientError, OSError, RuntimeError) as exc:
            last_error = exc
        await asyncio.sleep(every_s)
    raise NetworkError(f"timed out after {timeout_s:.0f}s waiting for {what}: {last_error!r}")


@dataclass
class LndNode:
    name: str
    lnddir: Path
    rest_port: int
    grpc_port: int
    p2p_port: int
    process: ManagedProcess
    pubkey: str = ""
    _client: LndRestClient | None = field(default=None, repr=False)

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
    def client(self) -> LndRestClient:
        if self._client is None:
            self._client = LndRestClient(self.rest_url, self.tls_cert, self.admin_macaroon)
        return self._client

    def describe(self) -> dict[str, Any]:
        return {
            "rest_url": self.rest_url,
            "grpc_host": self.grpc_host,
            "p2p_host": self.p2p_host,
            "pubkey": self.pubkey,
            "tls_cert": str(self.tls_cert),
            "admin_macaroon": str(self.admin_macaroon),
        }


@dataclass
class KuboNode:
    ipfs_path: Path
    process: ManagedProcess
    api_url: str = ""


def _say(message: str) -> None:
    print(f"[regtest] {message}", file=sys.stderr, flush=True)


class Network:
    """Use `async with Network.start() as net:`; see the module docstring."""

    def __init__(self, root: Path, bin_dir: Path, keep_root: bool = False, verbose: bool = True):
        self.root = root
        self.bin_dir = bin_dir
        self.keep_root = keep_root
        self.verbose = verbose
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

    # --- lifecycle ------------------------------------------------------------------

    @classmethod
    def start(cls, root: Path | None = None, verbose: bool = True) -> _NetworkContext:
        return _NetworkContext(cls, root, verbose)

    def _log(self, message: str) -> None:
        if self.verbose:
            _say(message)

    def processes(self) -> list[ManagedProcess]:
        procs = [n.process for n in self.nodes.values()]
        if self.kubo:
            procs.append(self.kubo.process)
        if self.btcd:
            procs.append(self.btcd)
        return procs

    async def up(self) -> None:
        started = time.monotonic()
        self.btcd_dir.mkdir(parents=True)
        # kubo is independent of the chain: start it alongside.
        kubo_task = asyncio.create_task(self._start_kubo())
        await self._start_btcd(mining_addrs=[])
        await asyncio.gather(*(self._start_lnd(name) for name in NODE_NAMES))
        self._log("lnd nodes up; funding wallets")
        addrs = [await self.node(n).client.new_address() for n in NODE_NAMES]
        # btcd has no generatetoaddress: restart it with the wallets as mining addresses.
        await self._restart_btcd(mining_addrs=addrs)
        await self._mine_until_segwit_active()
        await self.mine(COINBASE_MATURITY)
        await self.wait_synced()
        await self._open_channel("payer", "gateway")
        await self._wait_payable("payer", "gateway")
        await self._wait_payable("gateway", "payer")
        await self.wait_idle()
        await kubo_task
        self.ready_seconds = time.monotonic() - started
        self._log(f"network ready in {self.ready_seconds:.1f}s (state in {self.root})")

    async def down(self) -> None:
        for node in self.nodes.values():
            if node._client is not None:
                await node._client.close()
        if self.rpc is not None:
            await self.rpc.close()
        # LND first (it talks to btcd), then the rest.
        await asyncio.gather(*(n.process.stop() for n in self.nodes.values()))
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
        for other in self.nodes:
            if other != name:
                await self._wait_payable(other, name)
                await self._wait_payable(name, other)
        await self.wait_idle()

    async def wait_synced(self, timeout_s: float = 60) -> None:
        height = await self.block_count()

        async def synced() -> bool:
            for node in self.nodes.values():
                info = await node.client.get_info()
                if not info.synced_to_chain or info.block_height < height:
                    return False
            return True

        await wait_until("lnd nodes to sync to the chain", synced, timeout_s)

    async def _open_channel(self, opener: str, peer: str) -> None:
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

        await wait_until("channel open to be accepted", open_once, 30, every_s=0.5)
        assert self.rpc is not None
        rpc = self.rpc

        async def in_mempool() -> bool:
            return txids[-1] in await rpc.call("getrawmempool")

        # Mining before btcd has the funding tx would confirm nothing.
        await wait_until("funding transaction in the mempool", in_mempool, 30)
        await self.mine(3)

        async def active() -> bool:
            for node in (a, b):
                chans = await node.client.list_channels()
                if not any(c.get("active") for c in chans):
                    return False
            return True

        await wait_until("channel to become active", active, 60)

    async def _wait_payable(self, payer: str, payee: str) -> None:
        """A channel can be `active` a moment before its link forwards: prove it with 1 sat."""
        src, dst = self.node(payer).client, self.node(payee).client

        async def pays() -> bool:
            invoice = await dst.create_invoice(1_000, "regtest readiness probe", expiry_s=60)
            await src.pay_invoice(invoice.bolt11, fee_limit_msat=0, timeout_s=10)
            return True

        await wait_until(f"{payer} → {payee} payments to go through", pays, 60, every_s=0.3)

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
        ipfs_path = self.root / "kubo"
        env = {"IPFS_PATH": str(ipfs_path), "PATH": "/usr/bin:/bin", "HOME": str(self.root)}
        ipfs = str(self.bin_dir / "ipfs")
        for args in (
            ["init", "--profile=test", "--empty-repo"],
            ["config", "Routing.Type", "none"],
        ):
            proc = await asyncio.create_subprocess_exec(
                ipfs,
                *args,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise NetworkError(f"ipfs {' '.join(args)} failed: {out.decode()[-500:]}")
        process = ManagedProcess(
            "kubo", [ipfs, "daemon", "--offline"], self.root / "kubo.out", env=env
        )
        self.kubo = KuboNode(ipfs_path, process)
        await process.start()
        api_file = ipfs_path / "api"
        kubo = self.kubo

        async def api_ready() -> bool:
            if not api_file.exists():
                return False
            # e.g. /ip4/127.0.0.1/tcp/41234
            parts = api_file.read_text().strip().split("/")
            url = f"http://{parts[2]}:{parts[4]}"
            async with (
                aiohttp.ClientSession() as session,
                session.post(url + "/api/v0/version") as resp,
            ):
                ok = resp.status == 200
            if ok:
                kubo.api_url = url
            return ok

        await self._wait(process, "kubo API", api_ready, 30)

    # --- helpers for tests and the sandbox --------------------------------------------

    async def _wait(
        self,
        proc: ManagedProcess,
        what: str,
        check: Callable[[], Awaitable[bool]],
        timeout_s: float,
    ) -> None:
        async def alive_and_ready() -> bool:
            if not proc.running():
                raise NetworkError(f"{proc.name} exited early:\n{proc.log_tail()}")
            return await check()

        try:
            await wait_until(what, alive_and_ready, timeout_s)
        except NetworkError as exc:
            raise NetworkError(f"{exc}\n--- {proc.name} log ---\n{proc.log_tail()}") from None

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
            "pids": {p.name: p.pid for p in self.processes() if p.pid},
        }

    def write_description(self, path: Path, **extra: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe() | extra, indent=2))
        tmp.replace(path)


class _NetworkContext:
    def __init__(self, cls: type[Network], root: Path | None, verbose: bool):
        self._cls = cls
        self._root = root
        self._verbose = verbose
        self._net: Network | None = None

    async def __aenter__(self) -> Network:
        bin_dir = await asyncio.to_thread(build)
        keep = self._root is not None
        root = self._root or Path(tempfile.mkdtemp(prefix="bitcache-regtest-"))
        root.mkdir(parents=True, exist_ok=True)
        self._net = self._cls(root, bin_dir, keep_root=keep, verbose=self._verbose)
        try:
            await self._net.up()
        except BaseException:
            await self._net.down()
            raise
        return self._net

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._net is not None
        await self._net.down()
