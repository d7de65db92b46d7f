"""Initial folder sync vs a plain upload of the same bytes, and a no-change pass.

    python -m bench.sync [--mib 64] [--files 10000]

- plain upload: `bitcache upload` (BitcacheClient.upload) of one file of MIB MiB;
- initial sync: `bitcache sync` of a folder holding that same file (CDC, MACs, chunk files,
  one vault object) into a fresh vault on the same gateway, same run;
- no-change pass: a second `bitcache sync` over a folder of FILES small files (4 KiB each),
  which must stat everything and hash nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from client.api import BitcacheClient
from client.config import ClientConfig
from client.sync import vault as vaults
from client.sync.engine import SyncEngine
from gateway.server import serve
from regtest.network import Network
from regtest.process import free_port
from sandbox.run import sandbox_gateway_config
from storage.vault import MIN_MEMLIMIT, MIN_OPSLIMIT

MIB = 1 << 20


async def _account(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/accounts") as resp:
        return str((await resp.json())["api_key"])


async def _engine(url: str, tmp: Path, folder: Path) -> tuple[BitcacheClient, SyncEngine]:
    cfg = ClientConfig(gateway_url=url, api_key=await _account(url))
    client = BitcacheClient(cfg, cache_dir=tmp / "cache")
    keys = tmp / f"{folder.name}.keys.json"
    await vaults.init_vault(client, keys, "pw", opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT)
    vault = await vaults.Vault.open(client, keys)
    return client, SyncEngine(vault, folder, "bench")


async def main(mib: int, files: int) -> None:
    async with Network.start() as net:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            config = sandbox_gateway_config(net, tmp / "gw", free_port())
            async with serve(config) as url:
                big = tmp / "big"
                big.mkdir()
                data_path = big / "data.bin"
                data_path.write_bytes(os.urandom(mib * MIB))

                cfg = ClientConfig(gateway_url=url, api_key=await _account(url))
                async with BitcacheClient(cfg, cache_dir=tmp / "cache") as client:
                    t = time.perf_counter()
                    await client.upload(data_path, progress=False)
                    plain = mib / (time.perf_counter() - t)

                client, engine = await _engine(url, tmp, big)
                try:
                    t = time.perf_counter()
                    await engine.run_once()
                    synced = mib / (time.perf_counter() - t)
                finally:
                    engine.close()
                    await client.close()

                many = tmp / "many"
                for i in range(files):
                    d = many / f"d{i // 100:03d}"
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
                client, engine = await _engine(url, tmp, many)
                try:
                    t = time.perf_counter()
                    await engine.run_once()
                    initial_many = time.perf_counter() - t
                    t = time.perf_counter()
                    report = await engine.run_once()
                    nochange = time.perf_counter() - t
                finally:
                    engine.close()
                    await client.close()

    print(f"plain upload of {mib} MiB:      {plain:7.1f} MiB/s")
    print(f"initial sync of the same bytes: {synced:7.1f} MiB/s ({synced / plain:.2f} of plain)")
    print(f"initial sync of {files} files of 4 KiB: {initial_many:.1f} s")
    print(
        f"no-change pass over {files} files: {nochange:.2f} s "
        f"({report.hashed_files} hashed, {report.sent_objects} objects written)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.files))
