"""The whole path with no part faked: encrypt → kubo → 402 per range → pay over Lightning
→ decrypt, through the client API and the `bitcache` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from client.api import BitcacheClient
from client.config import ClientConfig
from client.errors import GatewayError
from gateway.config import GatewayConfig
from regtest.network import Network
from sandbox.run import sandbox_client_config
from storage.crypto import encode_file_id
from storage.errors import ChunkAuthError
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.sql import execute, fetch_all, fetch_value
from tests.support import create_account

pytestmark = pytest.mark.integration

MIB = 1 << 20
PRICE_MSAT = 2_000


@pytest.fixture(scope="module")
async def e2e(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayConfig, str]]:
    config = gateway_config(network, tmp_path_factory.mktemp("e2e"), default_price_msat=PRICE_MSAT)
    async with serve_gateway(config) as url:
        yield config, url


async def clients(network: Network, url: str) -> tuple[ClientConfig, ClientConfig]:
    """(uploader with an account, downloader without one), both paying with `payer`."""
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, url)
    return sandbox_client_config(network, url, key), sandbox_client_config(network, url)


async def test_five_mib_round_trip_pays_exactly_price_times_chunks(
    network: Network, e2e: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = e2e
    uploader, downloader = await clients(network, url)
    source = tmp_path / "five.bin"
    source.write_bytes(os.urandom(5 * MIB + 12_345))
    payer, gateway = network.node("payer").client, network.node("gateway").client
    await network.wait_idle()
    payer_before, _ = await payer.channel_balance_msat()
    gateway_before, _ = await gateway.channel_balance_msat()

    async with BitcacheClient(uploader) as client:
        link = await client.upload(source, progress=False)
    assert link.to_url().startswith(f"{url}/f/") and "#" in link.to_url()
    async with BitcacheClient(downloader) as client:
        result = await client.download(link.to_url(), tmp_path / "copy.bin", progress=False)

    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert result.chunks == 6 and result.chunks_bought == 6
    assert result.paid_msat == PRICE_MSAT * 6
    await network.wait_idle()
    payer_after, _ = await payer.channel_balance_msat()
    gateway_after, _ = await gateway.channel_balance_msat()
    assert payer_before - payer_after == PRICE_MSAT * 6 + result.fees_msat
    assert gateway_after - gateway_before == PRICE_MSAT * 6
    # No partial files or sidecars are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.bin", "five.bin"]


async def test_the_owner_downloads_free(
    network: Network, e2e: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = e2e
    uploader, _ = await clients(network, url)
    source = tmp_path / "mine.bin"
    source.write_bytes(os.urandom(MIB + 1))
    async with BitcacheClient(uploader) as client:
        link = await client.upload(source, progress=False)
        result = await client.download(link, tmp_path / "back.bin", progress=False)
    assert result.paid_msat == 0 and result.chunks_bought == 0
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


async def _tamper(config: GatewayConfig, sql: str, *params: object) -> None:
    assert await execute(config, sql, *params) > 0


@pytest.mark.parametrize("attack", ["tampered", "reordered", "truncated", "dropped"])
async def test_a_dishonest_gateway_is_caught_by_the_client(
    attack: str, network: Network, e2e: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = e2e
    uploader, downloader = await clients(network, url)
    source = tmp_path / "victim.bin"
    source.write_bytes(os.urandom(3 * MIB))
    async with BitcacheClient(uploader) as client:
        link = await client.upload(source, price_msat=0, progress=False)
    file_id = encode_file_id(link.file_id)
    if attack == "tampered":
        assert network.kubo is not None
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{network.kubo.api_url}/api/v0/cat", params={"arg": await _cid(config, file_id, 1)}
            ) as resp:
                sealed = bytearray(await resp.read())
            sealed[1000] ^= 1
            form = aiohttp.FormData()
            form.add_field("file", bytes(sealed), filename="x")
            async with session.post(
                f"{network.kubo.api_url}/api/v0/add", params={"cid-version": "1"}, data=form
            ) as resp:
                bad_cid = (await resp.json())["Hash"]
        await _tamper(
            config, "UPDATE chunks SET cid = ? WHERE file_id = ? AND idx = 1", bad_cid, file_id
        )
    elif attack == "reordered":
        first, second = await _cid(config, file_id, 0), await _cid(config, file_id, 1)
        await _tamper(
            config,
            "UPDATE chunks SET cid = CASE idx WHEN 0 THEN ? ELSE ? END"
            " WHERE file_id = ? AND idx IN (0, 1)",
            second,
            first,
            file_id,
        )
    elif attack == "truncated":  # the last chunk's ciphertext cut short
        assert network.kubo is not None
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{network.kubo.api_url}/api/v0/cat", params={"arg": await _cid(config, file_id, 2)}
            ) as resp:
                sealed = await resp.read()
            form = aiohttp.FormData()
            form.add_field("file", sealed[:-100], filename="x")
            async with session.post(
                f"{network.kubo.api_url}/api/v0/add", params={"cid-version": "1"}, data=form
            ) as resp:
                short_cid = (await resp.json())["Hash"]
        await _tamper(
            config,
            "UPDATE chunks SET cid = ?, size = ? WHERE file_id = ? AND idx = 2",
            short_cid,
            len(sealed) - 100,
            file_id,
        )
    else:  # claim the file is one chunk shorter: the new "last" chunk is not the last
        header = json.loads(
            await fetch_value(config, "SELECT header FROM files WHERE id = ?", file_id)
        )
        header["plaintext_size"] = 2 * MIB
        await _tamper(
            config,
            "UPDATE files SET header = ?, chunk_count = 2 WHERE id = ?",
            json.dumps(header, separators=(",", ":"), sort_keys=True),
            file_id,
        )
    out = tmp_path / "out.bin"
    async with BitcacheClient(downloader) as client:
        if attack == "dropped":
            # Caught before any chunk: the encrypted manifest knows the real size.
            with pytest.raises(GatewayError, match="do not match the encrypted manifest"):
                await client.download(link, out, progress=False)
        else:
            with pytest.raises(ChunkAuthError):
                await client.download(link, out, progress=False)
    assert not out.exists()


async def _cid(config: GatewayConfig, file_id: str, index: int) -> str:
    cid = await fetch_value(
        config, "SELECT cid FROM chunks WHERE file_id = ? AND idx = ?", file_id, index
    )
    return str(cid)


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
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_bitcache_command_uploads_and_gets(
    network: Network, e2e: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = e2e
    uploader, downloader = await clients(network, url)
    up_cfg, down_cfg = tmp_path / "up.json", tmp_path / "down.json"
    up_cfg.write_text(uploader.model_dump_json())
    down_cfg.write_text(downloader.model_dump_json())
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(2 * MIB + 7))

    code, out, err = await bitcache("upload", str(source), "--config", str(up_cfg), "-q")
    assert code == 0, err
    link = out.strip()
    code, out, err = await bitcache(
        "get", link, "-o", str(tmp_path / "got.pdf"), "--config", str(down_cfg), "-q"
    )
    assert code == 0, err
    assert (tmp_path / "got.pdf").read_bytes() == source.read_bytes()
    assert "paid 6 sat" in out
    # A wrong key is caught before anything is paid: not a msat leaves the payer's node,
    # and the gateway sells nothing more for this file.
    file_id = link.split("/f/")[1].split("#")[0]
    payer = network.node("payer").client
    await network.wait_idle()
    balance_before, _ = await payer.channel_balance_msat()
    invoices_before = await _invoices(config, file_id)
    wrong_key = link.split("#")[0] + "#" + "A" * 43
    code, out, err = await bitcache(
        "get", wrong_key, "-o", str(tmp_path / "wrong.pdf"), "--config", str(down_cfg)
    )
    assert code == 1 and err.startswith("error:") and "Traceback" not in err
    assert "key" in err.lower()
    await network.wait_idle()
    assert (await payer.channel_balance_msat())[0] == balance_before
    assert await _invoices(config, file_id) == invoices_before
    assert not (tmp_path / "wrong.pdf").exists()


async def _invoices(config: GatewayConfig, file_id: str) -> list[tuple[str, int]]:
    """(state, amount) of every invoice the gateway issued for the file."""
    rows = await fetch_all(
        config,
        "SELECT state, amount_msat FROM invoices WHERE file_id = ? ORDER BY created_at",
        file_id,
    )
    return [(str(r[0]), int(r[1])) for r in rows]
