"""Aggregate paid-download throughput with 1, 2 and 3 gateway processes, in one run.

    python -m bench.processes [--mib 6] [--clients 8] [--rounds 2] [--runs 2] [--no-write]

Three gateway processes (``python -m gateway``, as deployed) share one PostgreSQL database
(a throwaway server) and one token secret. For each N in 1, 2, 3, ``--clients`` paying
clients each buy the whole ``--mib`` MiB file over Lightning (the 402 challenge, a real
payment) from one of the first N processes, then read it ``--rounds`` times, spreading
their chunk requests over those N processes in turn (what a round-robin balancer does;
spread by the clients here, so no proxy of ours sits on the measured path). A token
minted by one process is checked by the others the first time they see it. Throughput
is all bytes received over the wall time, payments included; each measurement gets a fresh
account and file, so no cache of an earlier one helps. N = 1, 2, 3 are measured in turns,
``--runs`` times, best of each (a burst of load from elsewhere hits all three alike). The
ratios to 1 process go into bench/results.json as ``processes_2_vs_1`` and
``processes_3_vs_1``.

The clients (no decryption: the gateway's side of a paid download is what scales) share
the machine with the gateways, kubo, LND and PostgreSQL; on 2 cores the ratios say how
much of one process's limit was the process, not what more machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.crypto import RESULTS_PATH, merge_results
from bench.download import figure
from bench.harness import MIB, buy_token
from client.payer import LndPayer
from regtest import postgres
from regtest.network import Network
from sandbox.run import sandbox_gateway_config
from tests.gateways import replicas
from tests.support import create_account, random_bytes, upload_raw

PROCESSES = (1, 2, 3)
CHUNK = MIB
PRICE_MSAT = 1_000


async def paid_throughput(
    urls: list[str], payer: LndPayer, mib: int, clients: int, rounds: int
) -> float:
    """MiB/s that ``clients`` paying clients receive from the gateways at ``urls``."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        _, key = await create_account(session, urls[0])
        up = await upload_raw(
            session, urls[0], random_bytes(mib * MIB), PRICE_MSAT, CHUNK, api_key=key
        )
        chunks = len(up.sealed)
        total = 0

        async def client(n: int) -> None:
            nonlocal total
            auth = await buy_token(session, payer, urls[n % len(urls)], up.file_id, chunks)
            for request in range(rounds * chunks):
                url = urls[(n + request) % len(urls)]
                index = request % chunks
                async with session.get(
                    f"{url}/v1/files/{up.file_id}/chunks/{index}",
                    headers={"Authorization": auth},
                ) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"chunk {index} from {url}: HTTP {resp.status}")
                    size = 0
                    async for piece in resp.content.iter_chunked(256 << 10):
                        size += len(piece)
                total += size  # after the awaits: `total +=` across them would lose updates

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        return total / MIB / (time.perf_counter() - started)


async def main(mib: int, clients: int, rounds: int, runs: int, write: bool) -> None:
    started = time.perf_counter()
    starting = asyncio.create_task(asyncio.to_thread(postgres.start))  # beside the network
    work = Path(tempfile.mkdtemp(prefix="bitcache-bench-processes-"))
    server: postgres.PostgresServer | None = None
    try:
        async with Network.start() as net:
            server = await starting
            database = await postgres.create_database(server.url(), "bench_processes")
            config = sandbox_gateway_config(net, work / "gateway", 0, database_url=database)
            payer = LndPayer(net.node("payer").client, 100_000)
            print(f"  network ready at {time.perf_counter() - started:.0f} s", flush=True)
            async with replicas(config, max(PROCESSES)) as group:
                urls = [p.url for p in group.processes]
                print(f"  gateways up at {time.perf_counter() - started:.0f} s", flush=True)
                await paid_throughput(urls[:1], payer, 1, 2, 1)  # warm-up: first payments
                mibs: dict[int, float] = {}
                for run in range(runs):
                    for n in PROCESSES:
                        value = await paid_throughput(urls[:n], payer, mib, clients, rounds)
                        mibs[n] = max(mibs.get(n, value), value)
                        print(f"  run {run + 1}, {n} process(es): {value:.1f} MiB/s", flush=True)
    finally:
        if server is None:
            server = await starting
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    figures = {f"processes_{n}_vs_1": figure(mibs[n], mibs[1], "MiB/s") for n in PROCESSES if n > 1}
    print(
        f"\n{clients} paying clients x {rounds} reads of a {mib} MiB file ({mib} chunks), "
        f"aggregate over the gateway processes, best of {runs}:"
    )
    for n in PROCESSES:
        ratio = mibs[n] / mibs[1]
        print(f"  {n} process(es)  {mibs[n]:8.1f} MiB/s  {ratio:5.2f}x 1 process")
    print(f"(whole run {time.perf_counter() - started:.0f} s)")
    if write:
        merge_results(RESULTS_PATH, figures)
        print(f"wrote {', '.join(figures)} to {RESULTS_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=6, help="size of the file each client reads")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="reads of the file per client")
    parser.add_argument("--runs", type=int, default=2, help="turns over 1, 2, 3 processes")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.json")
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.clients, args.rounds, args.runs, not args.no_write))
