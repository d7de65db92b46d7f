"""What the network benches share: the gateway as its own process, a paid token, RSS.

The gateway runs as it is deployed, ``python -m gateway --config …`` in a process of its
own, so the benchmark's client (decrypting, writing, paying) never shares its event loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from client.payer import LndPayer
from gateway.config import GatewayConfig
from l402 import parse_challenge
from regtest.network import Network, wait_until
from regtest.process import ManagedProcess, free_port
from sandbox.run import sandbox_gateway_config

MIB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GatewayProcess:
    url: str
    config: GatewayConfig
    pid: int
    log_path: Path

    def rss_mb(self) -> float:
        """The gateway's resident set size now, in MB (10^6 bytes)."""
        return _status_kb(self.pid, "VmRSS") * 1024 / 1e6


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _write_config(path: Path, config: GatewayConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.model_dump_json())


@asynccontextmanager
async def gateway_process(
    net: Network, work: Path, **overrides: Any
) -> AsyncIterator[GatewayProcess]:
    """``python -m gateway --config`` on a free port until the block ends (SIGTERM, so it
    shuts down as in production: metering flushed, connections closed)."""
    config = sandbox_gateway_config(net, work / "gateway", free_port(), **overrides)
    config_path = work / "gateway.json"
    await asyncio.to_thread(_write_config, config_path, config)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = ManagedProcess(
        "gateway",
        [sys.executable, "-m", "gateway", "--config", str(config_path)],
        work / "gateway.log",
        env=env,
    )
    await proc.start()
    url = f"http://{config.host}:{config.port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                if not proc.running():
                    raise RuntimeError(f"gateway exited:\n{proc.log_tail()}")
                async with session.get(f"{url}/v1/health") as resp:
                    return resp.status == 200

            await wait_until("the gateway process", healthy, timeout_s=60)
        assert proc.pid is not None
        yield GatewayProcess(url, config, proc.pid, proc.log_path)
    finally:
        await proc.stop()


def chunk_cids(config: GatewayConfig, file_id: str) -> list[str]:
    """The file's chunk CIDs in order, read from the gateway's database."""
    with sqlite3.connect(config.database_path) as conn:
        rows = conn.execute(
            "SELECT cid FROM chunks WHERE file_id = ? ORDER BY idx", (file_id,)
        ).fetchall()
    return [str(r[0]) for r in rows]


async def buy_token(
    session: aiohttp.ClientSession, payer: LndPayer, url: str, file_id: str, count: int
) -> str:
    """Pays for chunks 0..count-1 of a file; returns the Authorization value that grants them."""
    async with session.get(f"{url}/v1/files/{file_id}/chunks/0?count={count}") as resp:
        assert resp.status == 402, resp.status
        problem = await resp.json()
        challenge = parse_challenge(resp.headers.getall("WWW-Authenticate"))
    assert problem["count"] == count, problem
    preimage = await payer.pay(challenge.invoice, int(problem["amount_msat"]))
    return f"L402 {challenge.macaroon}:{preimage.hex()}"


def write_random_file(path: Path, mib: int) -> None:
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))


class RssSampler:
    """The peak RSS of a process, sampled every ``every_s`` while the block runs."""

    def __init__(self, gateway: GatewayProcess, every_s: float = 0.05) -> None:
        self._gateway = gateway
        self._every_s = every_s
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, self._gateway.rss_mb())
            await asyncio.sleep(self._every_s)

    async def __aenter__(self) -> RssSampler:
        self.peak_mb = self._gateway.rss_mb()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak_mb = max(self.peak_mb, self._gateway.rss_mb())
