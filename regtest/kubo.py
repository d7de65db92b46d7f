"""Starting a kubo (IPFS) daemon on loopback with a fresh repository."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from regtest.process import ManagedProcess
from regtest.waiting import NetworkError, wait_process_ready


@dataclass
class KuboNode:
    ipfs_path: Path
    process: ManagedProcess
    api_url: str = ""
    api_multiaddr: str = ""  # e.g. /ip4/127.0.0.1/tcp/41234, as kubo wrote it


async def _ipfs(ipfs: Path, env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(ipfs), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise NetworkError(f"ipfs {' '.join(args)} failed: {out.decode()[-500:]}")
    return out.decode()


async def start_kubo(
    ipfs: Path, ipfs_path: Path, log_path: Path, name: str = "kubo", offline: bool = True
) -> KuboNode:
    """Inits a repo with the `test` profile (127.0.0.1, random ports, no bootstrap, no mDNS)
    and starts the daemon; returns once its RPC API answers.

    Offline is enough for one node. Cluster peers run online (still with no content
    routing) so that bitswap can fetch a block from a kubo they are connected to.
    """
    home = ipfs_path.parent
    env = {"IPFS_PATH": str(ipfs_path), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    await _ipfs(ipfs, env, "init", "--profile=test", "--empty-repo")
    await _ipfs(ipfs, env, "config", "Routing.Type", "none")
    argv = [str(ipfs), "daemon"] + (["--offline"] if offline else [])
    process = ManagedProcess(name, argv, log_path, env=env)
    node = KuboNode(ipfs_path, process)
    await process.start()
    api_file = ipfs_path / "api"

    async def api_ready() -> bool:
        if not api_file.exists():
            return False
        multiaddr = api_file.read_text().strip()
        parts = multiaddr.split("/")  # /ip4/127.0.0.1/tcp/41234
        url = f"http://{parts[2]}:{parts[4]}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/api/v0/version") as resp,
        ):
            ok = resp.status == 200
        if ok:
            node.api_url, node.api_multiaddr = url, multiaddr
        return ok

    try:
        await wait_process_ready(process, f"{name} API", api_ready, 30)
    except BaseException:
        await process.stop()  # nobody else holds it yet
        raise
    return node
