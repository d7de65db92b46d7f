"""Download throughput of a large file: paid per chunk vs the same file free vs kubo cat.

    python -m bench.download [--mib 256] [--runs 2]

All three read the same kind of data from the same kubo node on the same machine:
- kubo cat: the file's ciphertext chunks fetched straight from kubo's RPC API, as many in
  flight as the client uses (no gateway, no crypto, no payment) — the ceiling;
- free: `bitcache get` of the file uploaded at price 0 (gateway + decryption, no payment);
- paid: `bitcache get` of the file at the default price, paying with the regtest payer node.
The ratios paid/free and paid/kubo say what paying and the gateway cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from client import account
from client.api import BitcacheClient
from client.payer import LndPayer
from gateway.server import serve
from ipfs.kubo import KuboClient
from regtest.network import Network
from regtest.process import free_port
from sandbox.run import sandbox_client_config, sandbox_gateway_config
from storage.crypto import encode_file_id

MIB = 1 << 20


def _write_random_file(path: Path, mib: int) -> None:
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))


async def _kubo_cat_all(api_url: str, cids: list[str], concurrency: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for cid in cids:
        queue.put_nowait(cid)
    total = 0
    async with KuboClient(api_url) as kubo:

        async def worker() -> None:
            nonlocal total
            while not queue.empty():
                data = await kubo.cat(queue.get_nowait())
                total += len(data)  # after the await: `total +=` before it would lose updates

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        print(f"    kubo: {total} bytes in {elapsed:.2f}s", flush=True)
        return total / MIB / elapsed


def _cids(db_path: Path, file_id: str) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT cid FROM chunks WHERE file_id = ? ORDER BY idx", (file_id,)
        ).fetchall()
    return [r[0] for r in rows]


async def main(mib: int, runs: int) -> None:
    async with Network.start() as net:
        assert net.kubo is not None
        work = Path(tempfile.mkdtemp(prefix="bitcache-bench-"))
        config = sandbox_gateway_config(net, work / "gateway", free_port())
        async with serve(config) as url:
            async with BitcacheClient(sandbox_client_config(net, url)) as anonymous:
                api_key = (await account.create(anonymous))["api_key"]
            # The uploader's config: downloads by the owner would be free, so the
            # downloads below use a config without the account key.
            uploader = sandbox_client_config(net, url, api_key)
            client_config = sandbox_client_config(net, url)
            payer_node = net.node("payer").client
            source = work / "source.bin"
            _write_random_file(source, mib)
            async with BitcacheClient(uploader) as up:
                started = time.perf_counter()
                paid_link = await up.upload(source, progress=False)
                upload_mibs = mib / (time.perf_counter() - started)
                free_link = await up.upload(source, price_msat=0, progress=False)
            payer = LndPayer(payer_node, client_config.max_fee_msat)
            async with BitcacheClient(client_config, payer) as client:
                cids = _cids(config.database_path, encode_file_id(paid_link.file_id))

                results: dict[str, list[float]] = {"kubo": [], "free": [], "paid": []}
                paid_msat = payments = payments_before = 0
                for run in range(runs):
                    results["kubo"].append(
                        await _kubo_cat_all(net.kubo.api_url, cids, client_config.concurrency)
                    )
                    for name, link in (("free", free_link), ("paid", paid_link)):
                        out = work / f"{name}-{run}.bin"
                        started = time.perf_counter()
                        result = await client.download(link, out, progress=False)
                        results[name].append(mib / (time.perf_counter() - started))
                        if name == "paid":
                            paid_msat = result.paid_msat
                            payments = payer.payments - payments_before
                        payments_before = payer.payments
                        out.unlink()
                    print(
                        f"  run {run + 1}: "
                        + ", ".join(f"{k} {v[-1]:.1f} MiB/s" for k, v in results.items()),
                        flush=True,
                    )

        best = {name: max(values) for name, values in results.items()}
        print(f"\nDownload of a {mib} MiB file ({len(cids)} chunks), best of {runs} runs:")
        print(f"  kubo cat (baseline)  {best['kubo']:8.1f} MiB/s")
        print(f"  free download        {best['free']:8.1f} MiB/s")
        print(
            f"  paid download        {best['paid']:8.1f} MiB/s   "
            f"({payments} payments, {paid_msat // 1000} sat)"
        )
        print(f"  paid / free          {best['paid'] / best['free']:8.2f}")
        print(f"  paid / kubo cat      {best['paid'] / best['kubo']:8.2f}")
        print(f"  free / kubo cat      {best['free'] / best['kubo']:8.2f}")
        print(f"  (upload: {upload_mibs:.1f} MiB/s, encrypting on the client)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.runs))
