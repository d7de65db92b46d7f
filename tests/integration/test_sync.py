"""Folder sync through the vault on the real regtest network: several devices (configs and
folders) of one account on one machine, each with its own vault unlock."""

from __future__ import annotations

import filecmp
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from client.api import BitcacheClient
from client.config import ClientConfig
from client.sync import vault as vaults
from client.sync.engine import Report, SyncEngine
from client.sync.history import entries_at, restore
from gateway.config import GatewayConfig
from ipfs.kubo import KuboClient
from regtest.network import Network
from storage.vault import MIN_MEMLIMIT, MIN_OPSLIMIT
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.sql import fetch_all
from tests.support import create_account

pytestmark = pytest.mark.integration

MIB = 1 << 20
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
async def gw(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayConfig, str]]:
    config = gateway_config(network, tmp_path_factory.mktemp("sync-gw"))
    async with serve_gateway(config) as url:
        yield config, url


@dataclass
class Device:
    name: str
    folder: Path
    config: ClientConfig
    keys: Path

    async def sync(self) -> Report:
        async with BitcacheClient(self.config) as client:
            vault = await vaults.Vault.open(client, self.keys)
            engine = SyncEngine(vault, self.folder, self.name)
            try:
                return await engine.run_once()
            finally:
                engine.close()


async def devices(url: str, tmp: Path, n: int) -> list[Device]:
    """n devices of one new account; the first makes the vault, the others unlock it with
    the password (as a device that logs in would)."""
    async with aiohttp.ClientSession() as session:
        _, api_key = await create_account(session, url)
    out = []
    for i in range(n):
        name = f"dev{i}"
        folder = tmp / name
        folder.mkdir()
        cfg = ClientConfig(gateway_url=url, api_key=api_key)
        keys = tmp / f"{name}.vault-keys.json"
        async with BitcacheClient(cfg) as client:
            if i == 0:
                await vaults.init_vault(
                    client, keys, PASSWORD, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
                )
            else:
                await vaults.unlock_with_password(client, keys, PASSWORD)
        out.append(Device(name, folder, cfg, keys))
    return out


def same_tree(a: Path, b: Path) -> None:
    """`diff -r` without our state folder, plus the same mtimes."""
    cmp = filecmp.dircmp(a, b, ignore=[".bitcache-sync"])

    def check(c: filecmp.dircmp[str]) -> None:
        assert not c.left_only and not c.right_only, (c.left, c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, mismatch
        for name in c.common_files:
            assert (
                os.stat(os.path.join(c.left, name)).st_mtime_ns
                == os.stat(os.path.join(c.right, name)).st_mtime_ns
            ), name
        for sub in c.subdirs.values():
            check(sub)

    check(cmp)


def listing(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if ".bitcache-sync" not in p.parts
    )


async def test_two_devices_sync_both_ways_with_a_conflict_copy(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    a, b, c = await devices(url, tmp_path, 3)
    (a.folder / "docs" / "deep").mkdir(parents=True)
    (a.folder / "empty").mkdir()
    (a.folder / "docs" / "report.txt").write_text("version one\n")
    (a.folder / "docs" / "deep" / "photo.bin").write_bytes(os.urandom(700_000))
    (a.folder / "zero.bin").write_bytes(b"")
    os.utime(a.folder / "docs" / "report.txt", ns=(1_600_000_000_123_456_789,) * 2)
    first = await a.sync()
    assert first.uploaded_chunks >= 2 and not first.conflicts
    await b.sync()
    same_tree(a.folder, b.folder)
    assert (b.folder / "empty").is_dir()

    # A no-change pass hashes nothing and writes nothing.
    again = await b.sync()
    assert again.hashed_files == 0 and again.sent_objects == 0 and again.uploaded_bytes == 0

    # Both edit the same file while apart: one conflict copy, nothing lost.
    (a.folder / "docs" / "report.txt").write_text("edited on A\n")
    (b.folder / "docs" / "report.txt").write_text("edited on B, differently\n")
    await a.sync()
    second = await b.sync()
    assert len(second.conflicts) == 1
    copy = second.conflicts[0]
    assert copy.startswith("docs/report.sync-conflict-") and copy.endswith("-dev1.txt")
    await a.sync()
    same_tree(a.folder, b.folder)
    assert (a.folder / "docs" / "report.txt").read_text() == "edited on A\n"
    assert (a.folder / copy).read_text() == "edited on B, differently\n"

    # A third device that unlocked with the password sees the same tree.
    await c.sync()
    same_tree(a.folder, c.folder)


async def test_rename_copy_and_insert_send_only_what_changed(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    a, b = await devices(url, tmp_path, 2)
    big = os.urandom(24 * MIB)
    (a.folder / "big.bin").write_bytes(big)
    await a.sync()
    await b.sync()

    (a.folder / "big.bin").rename(a.folder / "renamed.bin")
    moved = await a.sync()
    assert moved.uploaded_bytes == 0 and moved.hashed_files == 0
    followed = await b.sync()
    assert followed.fetched_chunks == 0 and (b.folder / "renamed.bin").exists()

    (a.folder / "copy.bin").write_bytes(big)
    copied = await a.sync()
    assert copied.uploaded_bytes == 0  # every chunk is already in the vault

    (a.folder / "renamed.bin").write_bytes(b"!" + big)
    inserted = await a.sync()
    assert 0 < inserted.uploaded_bytes <= 4 * MIB + 1
    pulled = await b.sync()
    assert pulled.fetched_chunks <= 2  # the rest is copied from local files
    same_tree(a.folder, b.folder)


async def test_delete_into_trash_restore_and_older_version(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    a, b = await devices(url, tmp_path, 2)
    f = a.folder / "notes.txt"
    f.write_text("one")
    await a.sync()
    f.write_text("two")
    await a.sync()
    await b.sync()
    f.unlink()
    await a.sync()
    await b.sync()
    assert not (b.folder / "notes.txt").exists()

    async with BitcacheClient(b.config) as client:
        vault = await vaults.Vault.open(client, b.keys)
        engine = SyncEngine(vault, b.folder, b.name)
        try:
            await engine.pull()
            [(_, trashed)] = entries_at(engine, "notes.txt")
            assert trashed.deleted is not None and [v.n for v in trashed.versions] == [1, 2]
            assert await restore(engine, "notes.txt", None) == 3
            await engine.run_once()
            assert (b.folder / "notes.txt").read_text() == "two"
            assert await restore(engine, "notes.txt", 1) == 4
            await engine.run_once()
            assert (b.folder / "notes.txt").read_text() == "one"
        finally:
            engine.close()
    await a.sync()
    same_tree(a.folder, b.folder)


async def test_gateway_sees_no_name_key_or_plaintext(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = gw
    (a,) = await devices(url, tmp_path, 1)
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    name = "secret-name-" + os.urandom(6).hex()
    (a.folder / name).mkdir()
    (a.folder / name / f"{name}.txt").write_bytes(marker * 1000)
    await a.sync()
    master = (a.keys.read_text()).split('"')[3].encode()

    if not config.uses_postgres:  # the SQLite files themselves (PostgreSQL keeps its own)
        raw = b"".join(
            p.read_bytes()
            for p in config.database_path.parent.glob(config.database_path.name + "*")
        )
        for needle in (name.encode(), marker, master, PASSWORD.encode()):
            assert needle not in raw
    cids = [r[0] for r in await fetch_all(config, "SELECT cid FROM chunks")]
    kubo = KuboClient(config.kubo_api_url)
    try:
        for cid in cids:
            block = await kubo.cat(cid)
            assert marker not in block and name.encode() not in block
    finally:
        await kubo.close()
