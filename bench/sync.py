"""Initial folder sync beside a plain upload of the same bytes, and a no-change pass.

    python -m bench.sync [--mib 1024] [--files 10000] [--rename-mib 0] [--plain one|files]
                         [--no-write]

One gateway, run as its own process (`bench.harness.gateway_process`), on the regtest network:

- a tree of FILES random files (sizes drawn around MIB/FILES, seeded, in folders of 100)
  holding MIB MiB in all;
- plain upload of the same bytes: `bitcache upload` (BitcacheClient.upload) of one file
  holding the whole tree end to end (--plain one, the default: upload at its best), or of
  every file of the tree, eight at a time as the sync engine sends eight chunks at a time
  (--plain files: slower than the sync itself for small files, each upload being a file
  of its own with its own requests);
- initial sync: `bitcache sync` of the same tree into a fresh vault (CDC, chunk MACs, chunk
  files, one tree object per file and folder), same run;
- no-change pass: `bitcache sync` again over the unchanged tree, timed twice: in process
  (a fresh engine that reads its state from disk) and as the real command, interpreter
  start-up included; it must stat everything and hash nothing;
- with --rename-mib N: one N MiB file synced into its own vault, renamed, synced again:
  the bytes the second pass uploads (the issue's bound is 1 MiB for 500 MiB).

Writes `sync_vs_upload` and `sync_nochange_s` into bench/results.json unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.crypto import RESULTS_PATH, merge_results
from bench.harness import REPO, gateway_process
from client.api import BitcacheClient
from client.config import ClientConfig, save_config
from client.sync import vault as vaults
from client.sync.engine import Report, SyncEngine
from client.tasks import _run_all
from regtest.network import Network
from storage.vault import MIN_MEMLIMIT, MIN_OPSLIMIT

MIB = 1 << 20
PLAIN_CONCURRENCY = 8


def make_tree(root: Path, total: int, files: int, seed: int = 14) -> list[Path]:
    """``files`` files of random bytes, ``total`` bytes in all, sizes 0.5 to 1.5 times the mean."""
    rng = random.Random(seed)
    mean = total / files
    drawn = [mean * rng.uniform(0.5, 1.5) for _ in range(files)]
    sizes = [int(d * total / sum(drawn)) for d in drawn]
    sizes[-1] += total - sum(sizes)  # a few bytes of rounding
    paths = []
    for i, size in enumerate(sizes):
        folder = root / f"d{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i:05d}.bin"
        with path.open("wb") as f:
            f.write(os.urandom(max(0, size)))
        paths.append(path)
    return paths


class Device:
    """A fresh account with its vault, a config file and keys file for `bitcache sync`."""

    def __init__(self, url: str, work: Path, name: str) -> None:
        self.url, self.work, self.name = url, work, name
        self.folder = work / name
        self.config_path = work / f"{name}.json"
        self.keys = vaults.key_file(self.config_path)

    async def create(self) -> ClientConfig:
        async with aiohttp.ClientSession() as s, s.post(f"{self.url}/v1/accounts") as resp:
            api_key = str((await resp.json())["api_key"])
        cfg = ClientConfig(gateway_url=self.url, api_key=api_key)
        save_config(cfg, self.config_path)
        async with BitcacheClient(cfg, cache_dir=self.work / "cache") as client:
            await vaults.init_vault(
                client, self.keys, "pw", opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
            )
        self.folder.mkdir(exist_ok=True)
        return cfg

    async def sync(self, cfg: ClientConfig) -> tuple[float, Report]:
        """One pass by a fresh engine (state read from disk, as a new `bitcache sync`)."""
        async with BitcacheClient(cfg, cache_dir=self.work / "cache") as client:
            vault = await vaults.Vault.open(client, self.keys)
            engine = SyncEngine(vault, self.folder, self.name)
            try:
                t = time.perf_counter()
                report = await engine.run_once()
                return time.perf_counter() - t, report
            finally:
                engine.close()

    async def command(self) -> float:
        """`bitcache sync DIR` as a process, from exec to exit."""
        t = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client.cli",
            "sync",
            str(self.folder),
            "--config",
            str(self.config_path),
            "-q",
            stdout=asyncio.subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )
        if await proc.wait() != 0:
            raise RuntimeError("bitcache sync failed")
        return time.perf_counter() - t


def concatenate(paths: list[Path], target: Path) -> None:
    with target.open("wb") as out:
        for path in paths:
            out.write(path.read_bytes())


async def plain_upload(url: str, work: Path, paths: list[Path], one_file: bool) -> float:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/accounts") as resp:
        api_key = str((await resp.json())["api_key"])
    cfg = ClientConfig(gateway_url=url, api_key=api_key)
    if one_file:
        whole = work / "whole.bin"
        await asyncio.to_thread(concatenate, paths, whole)
        paths = [whole]
    todo = iter(paths)
    async with BitcacheClient(cfg, cache_dir=work / "plain-cache") as client:

        async def worker() -> None:
            for path in todo:
                await client.upload(path, progress=False)

        t = time.perf_counter()
        await _run_all([worker() for _ in range(PLAIN_CONCURRENCY)])
        return time.perf_counter() - t


async def main(mib: int, files: int, rename_mib: int, plain_mode: str, write: bool) -> None:
    async with Network.start() as net:
        with tempfile.TemporaryDirectory() as tmp_name:
            work = Path(tmp_name)
            async with gateway_process(net, work) as gw:
                tree = Device(gw.url, work, "tree")
                cfg = await tree.create()
                t = time.perf_counter()
                paths = await asyncio.to_thread(make_tree, tree.folder, mib * MIB, files)
                made = time.perf_counter() - t
                print(f"made {files} files, {mib} MiB, in {made:.1f} s", flush=True)

                plain_s = await plain_upload(gw.url, work, paths, plain_mode == "one")
                print(f"plain upload: {plain_s:.1f} s", flush=True)
                initial_s, first = await tree.sync(cfg)
                print(f"initial sync: {initial_s:.1f} s", flush=True)
                nochange_s, again = await tree.sync(cfg)
                command_s = await tree.command()

                rename = None
                if rename_mib:
                    big = Device(gw.url, work, "big")
                    big_cfg = await big.create()
                    await asyncio.to_thread(make_tree, big.folder, rename_mib * MIB, 1)
                    big_s, _ = await big.sync(big_cfg)
                    [old] = list(big.folder.glob("d000/*.bin"))
                    old.rename(old.with_name("renamed.bin"))
                    renamed_s, renamed = await big.sync(big_cfg)
                    rename = (big_s, renamed_s, renamed)

    plain = mib / plain_s
    synced = mib / initial_s
    print(f"tree: {files} files, {mib} MiB in all (sizes 0.5-1.5 x {mib * 1024 / files:.0f} KiB)")
    how = "as one file" if plain_mode == "one" else f"file by file, {PLAIN_CONCURRENCY} at a time"
    print(f"plain upload of the same bytes, {how}: {plain:7.1f} MiB/s  ({plain_s:.1f} s)")
    print(
        f"initial sync of the tree: {synced:7.1f} MiB/s  ({initial_s:.1f} s, "
        f"{synced / plain:.2f} of plain; {first.uploaded_chunks} chunks, "
        f"{first.sent_objects} vault objects)"
    )
    print(
        f"no-change pass over {files} files: {nochange_s:.2f} s in process, "
        f"{command_s:.2f} s as `bitcache sync` (start-up included); "
        f"{again.hashed_files} hashed, {again.sent_objects} objects written"
    )
    if rename is not None:
        big_s, renamed_s, renamed = rename
        print(
            f"one {rename_mib} MiB file: initial sync {rename_mib / big_s:.1f} MiB/s; "
            f"renamed, the next pass uploaded {renamed.uploaded_bytes} bytes "
            f"in {renamed_s:.2f} s ({renamed.hashed_files} hashed)"
        )
    if write:
        figures = {
            "sync_vs_upload": {
                "value": round(synced, 2),
                "baseline": round(plain, 2),
                "ratio": round(synced / plain, 3),
                "unit": "MiB/s",
            },
            "sync_nochange_s": {
                "value": round(nochange_s, 3),
                "baseline": 2.0,
                "ratio": round(nochange_s / 2.0, 3),
                "unit": "s",
            },
        }
        merge_results(RESULTS_PATH, figures)
        print(f"wrote {', '.join(figures)} to {RESULTS_PATH}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rename-mib", type=int, default=0)
    parser.add_argument("--plain", choices=["one", "files"], default="one")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.json")
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.files, args.rename_mib, args.plain, not args.no_write))
