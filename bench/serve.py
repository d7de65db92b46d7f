"""The gateway alone: paid chunks served to concurrent requests vs kubo cat of the same CIDs.

    python -m bench.serve [--mib 32] [--concurrency 16] [--rounds 4] [--runs 3] [--hold]

No decryption and no payment on the measured path: one token bought up front covers every
chunk, so this is the gateway's hot path (token check, file lookup, IPFS read, metering)
against kubo's own RPC at the same concurrency. ``--hold`` keeps the load running until
interrupted, for attaching a profiler to the gateway (its pid is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import MIB, buy_token, chunk_cids, gateway_process, write_random_file
from client import account
from client.api import BitcacheClient
from client.payer import LndPayer
from ipfs.kubo import KuboClient
from regtest.network import Network
from sandbox.run import sandbox_client_config
from storage.crypto import encode_file_id


async def gateway_mibs(
    url: str, file_id: str, auth: str, chunks: int, rounds: int, concurrency: int
) -> float:
    """MiB/s of ``rounds`` passes over every chunk, ``concurrency`` requests in flight."""
    order = iter(list(range(chunks)) * rounds)
    total = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal total
            for index in order:
                async with session.get(
                    f"{url}/v1/files/{file_id}/chunks/{index}", headers={"Authorization": auth}
                ) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"chunk {index}: HTTP {resp.status}")
                    size = 0
                    async for piece in resp.content.iter_chunked(256 << 10):
                        size += len(piece)
                total += size

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / MIB / (time.perf_counter() - started)


async def kubo_mibs(api_url: str, cids: list[str], rounds: int, concurrency: int) -> float:
    """The same bytes straight from kubo's RPC API (streamed, not kept), same concurrency."""
    order = iter(cids * rounds)
    total = 0
    async with KuboClient(api_url) as kubo:

        async def worker() -> None:
            nonlocal total
            for cid in order:
                size = 0
                async for piece in kubo.cat_stream(cid):
                    size += len(piece)
                total += size

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / MIB / (time.perf_counter() - started)


async def main(mib: int, concurrency: int, rounds: int, runs: int, hold: bool) -> None:
    async with Network.start() as net:
        assert net.kubo is not None
        work = Path(tempfile.mkdtemp(prefix="bitcache-bench-serve-"))
        try:
            async with gateway_process(net, work) as gw:
                print(f"gateway pid {gw.pid} at {gw.url}", flush=True)
                async with BitcacheClient(sandbox_client_config(net, gw.url)) as anonymous:
                    api_key = (await account.create(anonymous))["api_key"]
                source = work / "source.bin"
                write_random_file(source, mib)
                async with BitcacheClient(sandbox_client_config(net, gw.url, api_key)) as up:
                    link = await up.upload(source, progress=False)
                source.unlink()
                file_id = encode_file_id(link.file_id)
                cids = chunk_cids(gw.config, file_id)
                payer = LndPayer(net.node("payer").client, 100_000)
                async with aiohttp.ClientSession() as session:
                    auth = await buy_token(session, payer, gw.url, file_id, len(cids))
                results: dict[str, list[float]] = {"kubo": [], "gateway": []}
                for run in itertools.count():
                    if not hold and run >= runs:
                        break
                    results["kubo"].append(
                        await kubo_mibs(net.kubo.api_url, cids, rounds, concurrency)
                    )
                    results["gateway"].append(
                        await gateway_mibs(gw.url, file_id, auth, len(cids), rounds, concurrency)
                    )
                    print(
                        f"  run {run + 1}: kubo {results['kubo'][-1]:.1f} MiB/s, "
                        f"gateway {results['gateway'][-1]:.1f} MiB/s, rss {gw.rss_mb():.0f} MB",
                        flush=True,
                    )
        finally:  # the gateway's data and the downloaded files
            shutil.rmtree(work, ignore_errors=True)
    kubo, gateway = max(results["kubo"]), max(results["gateway"])
    print(f"\n{len(cids)} chunks x {rounds} rounds, {concurrency} in flight, best of {runs}:")
    print(f"  kubo cat (baseline)      {kubo:8.1f} MiB/s")
    print(f"  gateway, paid token      {gateway:8.1f} MiB/s   {gateway / kubo:.2f}x kubo")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.concurrency, args.rounds, args.runs, args.hold))
