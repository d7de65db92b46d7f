"""Upload, download, time to first byte and gateway memory, each beside its baseline.

    python -m bench.download [--mib 256] [--runs 3] [--rss-mib 256] [--no-write]

The gateway runs as its own process (``python -m gateway --config …``, as deployed); this
process is the client. Every figure is printed beside a baseline measured in the same run,
best of ``--runs`` (the machine is shared, so ratios mean more than absolute MiB/s):

- upload_vs_kubo_add: ``bitcache upload`` (read, seal, PUT) of a fresh random file against
  ``kubo add`` of the same bytes, in 1 MiB pieces, as many in flight as the client uses;
  each timed once earlier writes reached the disk, the two taking turns to go first;
- paid_vs_kubo: ``bitcache get`` of a paid file (paying, fetching, decrypting, writing) against
  kubo cat of the same ciphertext chunks from kubo's RPC API (no gateway, no crypto), by a
  client configured with ``credit_msat`` as a regular user would be: it holds prepaid
  credit (bought by an earlier download, outside the timing), so each range is paid by a
  debit at the gateway, and tops it up in the background;
- paid_invoices_vs_kubo: the same download by a client without credit, paying an invoice
  over Lightning for each range (the first one before its first byte);
- paid_vs_free: the paid download (with credit) against the same download of the same
  data uploaded at price 0; paid_invoices_vs_free: the one paying invoices, against it;
- ttfb_paid_vs_free: from nothing to the first byte of chunk 0, as the client does it once
  it holds prepaid credit: the file's state, then the chunk, paid by a debit of the credit
  (bought beforehand, outside the timing);
- ttfb_paid_cold_vs_free: the same with no credit held, the first purchase: the file's
  state, the 402 challenge, paying its invoice over Lightning, the chunk;
- gateway_rss_mb: the gateway's peak RSS while 10 clients download one ``--rss-mib`` MiB paid
  file at once, beside its RSS before (idle, after start-up and the uploads).

Writes those figures into bench/results.json, keeping the figures other benches wrote there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bench.crypto import RESULTS_PATH, merge_results
from bench.harness import (
    MIB,
    GatewayProcess,
    RssSampler,
    chunk_cids,
    gateway_process,
    write_random_file,
)
from client import account
from client.api import BitcacheClient
from client.config import ClientConfig
from client.payer import LndPayer
from ipfs.kubo import KuboClient
from l402 import parse_challenge
from regtest.network import Network
from sandbox.run import sandbox_client_config
from storage.capability import ShareLink
from storage.crypto import encode_file_id

T = TypeVar("T")
RSS_DOWNLOADS = 10
# Prepaid credit bought for the first-byte runs: far more than they spend.
CREDIT_MSAT = 1_000_000
# The paying downloader's credit_msat: a purchase covers several timed downloads of the
# largest file (256 MiB at the sandbox's 2 000 msat a chunk: 512 000 msat), so a top-up, in
# the background anyway, is rare within the timing.
DOWNLOADER_CREDIT_MSAT = 5_000_000


def figure(value: float, baseline: float, unit: str) -> dict[str, Any]:
    return {
        "value": round(value, 3),
        "baseline": round(baseline, 3),
        "ratio": round(value / baseline, 3),
        "unit": unit,
    }


async def settled(step: Awaitable[T]) -> T:
    """``step`` once every earlier write reached the disk, so that none is written back
    during its timing (the source file just written, the other upload's blocks)."""
    await asyncio.to_thread(os.sync)
    return await step


async def upload_mibs(
    config: ClientConfig, source: Path, price_msat: int | None
) -> tuple[float, ShareLink]:
    """MiB/s of one ``bitcache upload`` of ``source``, and its link."""
    mib = (await asyncio.to_thread(source.stat)).st_size / MIB
    async with BitcacheClient(config) as client:
        started = time.perf_counter()
        link = await client.upload(source, price_msat=price_msat, progress=False)
        return mib / (time.perf_counter() - started), link


async def kubo_add_mibs(api_url: str, source: Path, concurrency: int) -> float:
    """``kubo add`` of the file's bytes in 1 MiB pieces, ``concurrency`` at a time."""
    size = (await asyncio.to_thread(source.stat)).st_size
    offsets = iter(range(0, size, MIB))
    async with KuboClient(api_url) as kubo:

        async def worker() -> None:
            with source.open("rb") as fh:
                for offset in offsets:
                    fh.seek(offset)
                    await kubo.add(await asyncio.to_thread(fh.read, MIB))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return size / MIB / (time.perf_counter() - started)


async def kubo_cat_mibs(api_url: str, cids: list[str], concurrency: int) -> float:
    """Every chunk read whole from kubo's RPC API, ``concurrency`` at a time."""
    todo = iter(cids)
    total = 0
    async with KuboClient(api_url) as kubo:

        async def worker() -> None:
            nonlocal total
            for cid in todo:
                data = await kubo.cat(cid)
                total += len(data)  # after the await: `total +=` before it would lose updates

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / MIB / (time.perf_counter() - started)


async def download_mibs(
    config: ClientConfig,
    payer: LndPayer,
    link: ShareLink,
    out: Path,
    credit_path: Path | None = None,
) -> tuple[float, int]:
    """MiB/s of one ``bitcache get`` (a fresh client: no tokens from earlier runs), and the
    number of payments it made (credit purchases included). ``credit_path``: where the
    client keeps its prepaid credit, when ``config`` has ``credit_msat``."""
    payments = payer.payments
    async with BitcacheClient(config, payer, credit_path=credit_path) as client:
        started = time.perf_counter()
        result = await client.download(link, out, progress=False)
        elapsed = time.perf_counter() - started
    await asyncio.to_thread(out.unlink)
    return result.size / MIB / elapsed, payer.payments - payments


async def buy_credit(url: str, payer: LndPayer, amount_msat: int) -> str:
    """Prepaid credit bought at the gateway: its Authorization value."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/credit", json={"amount_msat": amount_msat}) as resp,
    ):
        assert resp.status == 402, resp.status
        challenge = parse_challenge(resp.headers.getall("WWW-Authenticate"))
    preimage = await payer.pay(challenge.invoice, amount_msat)
    return f"L402 {challenge.macaroon}:{preimage.hex()}"


async def first_byte(
    url: str, file_id: str, payer: LndPayer | None, credit: str | None = None
) -> dict[str, float]:
    """Seconds from a new connection to the first byte of chunk 0, the client's way, and its
    phases: the file's state, the 402 challenge and the payment (paid without credit only),
    the chunk (with ``credit``: paid by a debit of it)."""
    phases: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        started = mark = time.perf_counter()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = now - mark
            mark = now

        async with session.get(f"{url}/v1/files/{file_id}") as resp:
            assert resp.status == 200, resp.status
            await resp.read()
        phase("state")
        headers = {}
        if credit is not None:
            headers["Authorization"] = credit
        elif payer is not None:
            async with session.get(f"{url}/v1/files/{file_id}/chunks/0") as resp:
                assert resp.status == 402, resp.status
                problem = await resp.json()
                challenge = parse_challenge(resp.headers.getall("WWW-Authenticate"))
            phase("challenge")
            preimage = await payer.pay(challenge.invoice, int(problem["amount_msat"]))
            phase("payment")
            headers["Authorization"] = f"L402 {challenge.macaroon}:{preimage.hex()}"
        async with session.get(f"{url}/v1/files/{file_id}/chunks/0", headers=headers) as resp:
            assert resp.status == 200, resp.status
            await resp.content.readany()
            phase("chunk")
            assert credit is None or "Bitcache-Token" in resp.headers
            phases["total"] = time.perf_counter() - started
            await resp.read()
    if payer is not None and credit is None:  # the gateway's part, less the Lightning trips
        phases["gateway"] = phases["total"] - phases["challenge"] - phases["payment"]
    return phases


async def rss_phase(
    net: Network, gw: GatewayProcess, uploader: ClientConfig, work: Path, mib: int
) -> tuple[float, float]:
    """(idle RSS, peak RSS) of the gateway, in MB, around 10 concurrent paid downloads."""
    source = work / "large.bin"
    await asyncio.to_thread(write_random_file, source, mib)
    async with BitcacheClient(uploader) as up:
        link = await up.upload(source, progress=False)
    source.unlink()
    idle = gw.rss_mb()
    config = sandbox_client_config(net, gw.url)
    payer = LndPayer(net.node("payer").client, config.max_fee_msat)

    async def one(n: int) -> None:
        out = work / f"large-{n}.bin"
        async with BitcacheClient(config, payer) as client:
            await client.download(link, out, progress=False)
        out.unlink()

    started = time.perf_counter()
    async with RssSampler(gw) as sampler:
        await asyncio.gather(*(one(n) for n in range(RSS_DOWNLOADS)))
    elapsed = time.perf_counter() - started
    print(
        f"  {RSS_DOWNLOADS} concurrent paid downloads of {mib} MiB in {elapsed:.1f}s "
        f"({RSS_DOWNLOADS * mib / elapsed:.1f} MiB/s in all); gateway RSS idle {idle:.0f} MB, "
        f"peak {sampler.peak_mb:.0f} MB",
        flush=True,
    )
    return idle, sampler.peak_mb


async def main(mib: int, runs: int, rss_mib: int, write: bool) -> None:
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, value), value)

    async with Network.start() as net:
        assert net.kubo is not None
        work = Path(tempfile.mkdtemp(prefix="bitcache-bench-"))
        try:
            async with gateway_process(net, work / "gw") as gw:
                async with BitcacheClient(sandbox_client_config(net, gw.url)) as anonymous:
                    api_key = (await account.create(anonymous))["api_key"]
                # The uploader's config: downloads by the owner would be free, so the
                # downloads below use a config without the account key.
                uploader = sandbox_client_config(net, gw.url, api_key)
                downloader = sandbox_client_config(net, gw.url)
                # The same client holding prepaid credit, kept in the bench's directory.
                crediting = downloader.model_copy(update={"credit_msat": DOWNLOADER_CREDIT_MSAT})
                credit_path = work / "credit.json"
                payer = LndPayer(net.node("payer").client, downloader.max_fee_msat)
                concurrency = downloader.concurrency

                # Uploads: a fresh file each run, so kubo never sees bytes it already holds.
                # Each timing starts with nothing left to write back (the source file, the
                # other upload's blocks), and the two take turns going first.
                links: list[ShareLink] = []
                for run in range(max(runs, 2)):
                    source = work / f"source-{run}.bin"
                    await asyncio.to_thread(write_random_file, source, mib)

                    # The first upload is free, the others paid: both kinds serve the downloads.
                    price = None if run else 0
                    add = kubo_add_mibs(net.kubo.api_url, source, concurrency)
                    ours = upload_mibs(uploader, source, price)
                    if run % 2:
                        (upload, link), kubo = await settled(ours), await settled(add)
                    else:
                        kubo, (upload, link) = await settled(add), await settled(ours)
                    links.append(link)
                    source.unlink()
                    keep("kubo add", kubo)
                    keep("upload", upload)
                    print(f"  upload run {run + 1}: kubo add {kubo:.1f}, upload {upload:.1f} MiB/s")
                free_link, paid_link = links[0], links[1]
                paid_id = encode_file_id(paid_link.file_id)
                cids = chunk_cids(gw.config, paid_id)

                # The credit a regular client holds, bought as its first paid download buys
                # it, before the timing (untimed: that download pays for its credit).
                await download_mibs(crediting, payer, paid_link, work / "paid.bin", credit_path)

                # Downloads, in turns, so a burst of load from elsewhere hits all alike.
                for run in range(runs):
                    kubo = await kubo_cat_mibs(net.kubo.api_url, cids, concurrency)
                    free, _ = await download_mibs(downloader, payer, free_link, work / "free.bin")
                    paid, topups = await download_mibs(
                        crediting, payer, paid_link, work / "paid.bin", credit_path
                    )
                    invoiced, payments = await download_mibs(
                        downloader, payer, paid_link, work / "paid.bin"
                    )
                    keep("kubo cat", kubo)
                    keep("free", free)
                    keep("paid", paid)
                    keep("paid invoices", invoiced)
                    print(
                        f"  download run {run + 1}: kubo cat {kubo:.1f}, free {free:.1f}, "
                        f"paid with credit {paid:.1f} ({topups} top-ups), "
                        f"paid by invoices {invoiced:.1f} MiB/s ({payments} payments)",
                        flush=True,
                    )

                # Time to first byte: best of several, each phase the best of its own. Paid
                # with credit held (bought here, before the timing) and cold (no credit:
                # the 402 challenge and a Lightning payment before the chunk).
                ttfb_runs = max(runs, 5)
                credit = await buy_credit(gw.url, payer, CREDIT_MSAT)
                ttfb: dict[str, dict[str, float]] = {"free": {}, "paid": {}, "cold": {}}
                free_id = encode_file_id(free_link.file_id)
                for _ in range(ttfb_runs):
                    for name, file_id, who, held in (
                        ("free", free_id, None, None),
                        ("paid", paid_id, payer, credit),
                        ("cold", paid_id, payer, None),
                    ):
                        phases = await first_byte(gw.url, file_id, who, held)
                        for part, seconds in phases.items():
                            ttfb[name][part] = min(ttfb[name].get(part, seconds), seconds)
                print(
                    "  first byte, best ms: "
                    + "; ".join(
                        f"{name} " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in parts.items())
                        for name, parts in (
                            ("free", ttfb["free"]),
                            ("paid with credit", ttfb["paid"]),
                            ("paid cold", ttfb["cold"]),
                        )
                    ),
                    flush=True,
                )

                idle, peak = await rss_phase(net, gw, uploader, work, rss_mib)
        finally:  # the gateway's data and the downloaded files
            shutil.rmtree(work, ignore_errors=True)

    figures = {
        "upload_vs_kubo_add": figure(best["upload"], best["kubo add"], "MiB/s"),
        "paid_vs_kubo": figure(best["paid"], best["kubo cat"], "MiB/s"),
        "paid_vs_free": figure(best["paid"], best["free"], "MiB/s"),
        # Not one of issue 15's names: a client without credit, paying an invoice over
        # Lightning per range, beside the same baselines.
        "paid_invoices_vs_kubo": figure(best["paid invoices"], best["kubo cat"], "MiB/s"),
        "paid_invoices_vs_free": figure(best["paid invoices"], best["free"], "MiB/s"),
        # The client's normal way once it holds prepaid credit: a debit, no payment.
        "ttfb_paid_vs_free": figure(
            ttfb["paid"]["total"] * 1000, ttfb["free"]["total"] * 1000, "ms"
        ),
        # Not one of issue 15's names: the first purchase, with no credit held (the 402
        # challenge with its LND invoice, and the Lightning payment, before the chunk).
        "ttfb_paid_cold_vs_free": figure(
            ttfb["cold"]["total"] * 1000, ttfb["free"]["total"] * 1000, "ms"
        ),
        # Not one of issue 15's names: the cold paid first byte less the Lightning round
        # trips (invoice, payment), i.e. what the gateway itself adds to a paid request.
        "ttfb_paid_without_payment_vs_free": figure(
            ttfb["cold"]["gateway"] * 1000,
            ttfb["free"]["total"] * 1000,
            "ms",
        ),
        "gateway_rss_mb": figure(peak, idle, "MB"),
    }
    print(f"\n{mib} MiB files ({len(cids)} chunks), {concurrency} in flight, best of {runs}:")
    rows = [
        ("upload_vs_kubo_add", "upload", "kubo add", "≥ 0.6"),
        ("paid_vs_kubo", "paid download (credit)", "kubo cat", "≥ 0.6"),
        ("paid_vs_free", "paid download (credit)", "free download", "≥ 0.95"),
        ("paid_invoices_vs_kubo", "paid download (invoices)", "kubo cat", "-"),
        ("paid_invoices_vs_free", "paid download (invoices)", "free download", "-"),
        ("ttfb_paid_vs_free", "first byte, paid (credit)", "first byte, free", "≤ 2"),
        ("ttfb_paid_cold_vs_free", "first byte, paid cold", "first byte, free", "-"),
        (
            "ttfb_paid_without_payment_vs_free",
            "  cold less invoice and payment",
            "first byte, free",
            "-",
        ),
        ("gateway_rss_mb", f"gateway RSS, {RSS_DOWNLOADS} x {rss_mib} MiB", "idle", "≤ 150 MB"),
    ]
    for name, what, against, target in rows:
        f = figures[name]
        print(
            f"  {what:30} {f['value']:9.1f} {f['unit']:5}  {against:17} {f['baseline']:9.1f}"
            f"  ratio {f['ratio']:5.2f}  (target {target})"
        )
    if write:
        merge_results(RESULTS_PATH, figures)
        print(f"wrote {', '.join(figures)} to {RESULTS_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="size of the files timed")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rss-mib", type=int, default=256, help=f"size of the file {RSS_DOWNLOADS} clients get"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch results.json")
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.runs, args.rss_mib, not args.no_write))
