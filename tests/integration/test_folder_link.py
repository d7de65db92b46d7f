"""Folder links on the real regtest network: `bitcache share DIR` of a folder in a synced
tree, then `bitcache get` of the link by someone else, paying per chunk over Lightning."""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from client.api import BitcacheClient
from client.folder import upload_manifest
from client.sync import vault as vaults
from client.sync.engine import SyncEngine
from gateway.config import GatewayConfig
from gateway.server import serve
from regtest.network import Network
from sandbox.run import sandbox_client_config
from storage.folder_link import FolderLink
from storage.vault import MIN_MEMLIMIT, MIN_OPSLIMIT, canonical_json, pad
from tests.conftest import gateway_config
from tests.support import create_account

pytestmark = pytest.mark.integration

MIB = 1 << 20
PRICE_MSAT = 1_000
PASSWORD = "folder links"


@pytest.fixture(scope="module")
async def gw(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayConfig, str]]:
    config = gateway_config(
        network, tmp_path_factory.mktemp("folder-gw"), default_price_msat=PRICE_MSAT
    )
    async with serve(config) as url:
        yield config, url


async def bitcache(*args: str) -> tuple[int, str, str]:
    """Runs the `bitcache` command without blocking the loop that serves the gateway."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def configs(network: Network, url: str, tmp: Path) -> tuple[Path, Path]:
    """(owner's config with an account and a vault, a stranger's config), both paying."""
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, url)
    owner, stranger = tmp / "owner.json", tmp / "stranger.json"
    owner.write_text(sandbox_client_config(network, url, key).model_dump_json())
    stranger.write_text(sandbox_client_config(network, url).model_dump_json())
    return owner, stranger


def same_tree(a: Path, b: Path) -> int:
    """`diff -r`, byte for byte; returns the number of files compared."""
    cmp = filecmp.dircmp(a, b, ignore=[".bitcache-sync"])
    count = 0

    def check(c: filecmp.dircmp[str]) -> None:
        nonlocal count
        assert not c.left_only and not c.right_only, (c.left, c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, (mismatch, errors)
        count += len(c.common_files)
        for sub in c.subdirs.values():
            check(sub)

    check(cmp)
    return count


async def test_share_dir_then_get_reproduces_the_folder_and_pays_per_chunk(
    network: Network, gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    owner_cfg, stranger_cfg = await configs(network, url, tmp_path)
    synced = tmp_path / "synced"
    shared = synced / "Holiday 2026"
    (shared / "day 1" / "raw").mkdir(parents=True)
    (shared / "empty-folder-is-not-listed").mkdir()
    (shared / "day 1" / "raw" / "IMG_0001.bin").write_bytes(os.urandom(4 * MIB + 5))
    (shared / "day 1" / "notes \u2013 Zürich.txt").write_text("a note 📄\n")
    (shared / "zero.bin").write_bytes(b"")
    (shared / "three.bin").write_bytes(os.urandom(MIB))
    (synced / "not shared.txt").write_text("outside the shared folder")

    # The folder is in a synced tree (the owner's vault), as `bitcache share` expects.
    owner = sandbox_client_config(network, url, json.loads(owner_cfg.read_text())["api_key"])
    async with BitcacheClient(owner) as client:
        keys = tmp_path / "owner.vault-keys.json"
        await vaults.init_vault(
            client, keys, PASSWORD, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT
        )
        engine = SyncEngine(await vaults.Vault.open(client, keys), synced, "laptop")
        try:
            await engine.run_once()
        finally:
            engine.close()

    code, out, err = await bitcache("share", str(shared), "--config", str(owner_cfg), "-q")
    assert code == 0, err
    link = out.strip()
    assert link.startswith(f"{url}/d/") and "#v1." in link
    FolderLink.parse(link)

    code, out, err = await bitcache("info", link, "--config", str(stranger_cfg))
    assert code == 0, err
    assert "files:    4" in out and "for all 8 chunks" in out and "'day 1/raw/IMG_0001.bin'" in out

    payer, gateway = network.node("payer").client, network.node("gateway").client
    await network.wait_idle()
    payer_before, _ = await payer.channel_balance_msat()
    gateway_before, _ = await gateway.channel_balance_msat()
    target = tmp_path / "got"
    code, out, err = await bitcache("get", link, "-o", str(target), "--config", str(stranger_cfg))
    assert code == 0, err
    # The empty folder is not part of a folder link (only files are listed).
    (target / "empty-folder-is-not-listed").mkdir()
    assert same_tree(shared, target) == 4
    assert not (target / "not shared.txt").exists()
    # 5 chunks + 1 + 1 (the empty file is one empty chunk) + 1; the manifest is free.
    chunks = 5 + 1 + 1 + 1
    assert f"saved 4 files in {target}" in out
    assert f"for {chunks} of {chunks} chunks" in out, out
    # Progress: the large file on its own, the three small ones together.
    assert "(1/1) 'day 1/raw/IMG_0001.bin'" in err and "3 small files" in err, err
    await network.wait_idle()
    payer_after, _ = await payer.channel_balance_msat()
    gateway_after, _ = await gateway.channel_balance_msat()
    assert gateway_after - gateway_before == PRICE_MSAT * chunks
    assert payer_before - payer_after >= PRICE_MSAT * chunks

    # `share` of a single synced file still gives the usual paid file link.
    code, out, err = await bitcache(
        "share", str(shared / "three.bin"), "--config", str(owner_cfg), "-q"
    )
    assert code == 0, err
    file_link = out.strip()
    assert file_link.startswith(f"{url}/f/") and "#" in file_link
    one = tmp_path / "one.bin"
    code, out, err = await bitcache(
        "get", file_link, "-o", str(one), "--config", str(stranger_cfg), "-q"
    )
    assert code == 0, err
    assert one.read_bytes() == (shared / "three.bin").read_bytes()
    assert "for 1 of 1 chunks" in out

    # Run again: every file is complete already, nothing is fetched or paid.
    code, out, err = await bitcache("get", link, "-o", str(target), "--config", str(stranger_cfg))
    assert code == 0, err
    assert "4 files were already complete" in out and "paid nothing" in out


async def test_a_hostile_manifest_is_refused_before_anything_is_written(
    network: Network, gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    owner_cfg, stranger_cfg = await configs(network, url, tmp_path)
    owner = sandbox_client_config(network, url, json.loads(owner_cfg.read_text())["api_key"])
    good = tmp_path / "good.txt"
    good.write_text("fine")
    async with BitcacheClient(owner) as client:
        file_link = await client.upload(good, progress=False)
        ok = {
            "path": "good.txt",
            "size": 4,
            "file_id": file_link.to_url().split("/f/")[1].split("#")[0],
            "key": file_link.to_url().split("#")[1],
        }
        for bad_path in ("../escaped.txt", "/tmp/absolute.txt", "a\u0000b", "x" * 300):
            body = {"version": 1, "name": "evil", "files": [ok, ok | {"path": bad_path}]}
            link = await upload_manifest(client, "evil", pad(canonical_json(body), 1024))
            out_dir = tmp_path / "out"
            code, _, err = await bitcache(
                "get", link.to_url(), "-o", str(out_dir), "--config", str(stranger_cfg), "-q"
            )
            assert code == 1 and err.startswith("error:") and "refused path" in err, err
            assert "Traceback" not in err
            assert not (tmp_path / "escaped.txt").exists()
            assert not out_dir.exists()
