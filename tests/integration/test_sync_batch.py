"""Small files through POST /v1/files/batch on the real regtest network: a tree of many
small files syncs in batches, hostile batches store nothing, and a killed sync resumes
without storing a finished item twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.api import BitcacheClient
from client.sync import vault as vaults
from gateway.config import GatewayConfig
from gateway.server import serve
from regtest.network import Network
from regtest.waiting import wait_until
from storage.crypto import FileEncryptor, b64url_encode
from storage.file_batch import BATCH_MEDIA_TYPE, MAX_BATCH_BODY_BYTES, encode_batch
from tests.conftest import gateway_config
from tests.integration.test_sync import (
    METRICS_URLS,
    bitcache,
    chunk_puts,
    devices,
    finish,
    gw,
    metric,
    same_tree,
    sync_args,
    uploaded_chunks,
)
from tests.sql import fetch_all
from tests.support import TcpProxy, bearer, create_account

__all__ = ["gw"]  # the module-scoped gateway fixture, shared with test_sync
pytestmark = pytest.mark.integration

BATCH = {"route": "/v1/files/batch", "method": "POST"}
Item = tuple[dict[str, Any], str, bytes]


def small_tree(root: Path, files: int, seed: int) -> None:
    """``files`` random files of 1 to 12 KiB in folders of 100."""
    rng = random.Random(seed)
    for i in range(files):
        folder = root / f"d{i // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 12 * 1024)))


def item(size: int = 3000) -> Item:
    """A sealed single-chunk file of random key and id (the gateway never opens it)."""
    chunk_size = max(4096, size)
    enc = FileEncryptor(os.urandom(32), os.urandom(16), size, chunk_size)
    return enc.header.to_json_dict(), b64url_encode(os.urandom(160)), enc.seal(0, bytes(size))


async def post_batch(
    session: aiohttp.ClientSession, url: str, key: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    headers = {**bearer(key), "Content-Type": BATCH_MEDIA_TYPE}
    async with session.post(f"{url}/v1/files/batch", data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def file_status(session: aiohttp.ClientSession, url: str, file_id: str) -> int:
    async with session.get(f"{url}/v1/files/{file_id}") as r:
        return r.status


async def used_bytes(config: GatewayConfig, account: str) -> int:
    [(used,)] = await fetch_all(config, "SELECT used_bytes FROM accounts WHERE id = ?", account)
    return int(used)


async def test_a_2000_file_tree_syncs_in_batches(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    _, url = gw
    a, b = await devices(url, tmp_path, 2)
    small_tree(a.folder, 2000, seed=1)
    batches, puts = (
        await metric(url, "bitcache_http_requests_total", **BATCH),
        await chunk_puts(url),
    )
    report = await a.sync()
    sent_batches = await metric(url, "bitcache_http_requests_total", **BATCH) - batches
    assert report.uploaded_chunks == 2000
    assert report.reused_chunks == 0
    # 2000 files of <= 12 KiB: 64 a batch, so 32 batches (a few more if a pass is split).
    assert 32 <= sent_batches <= 40, sent_batches
    assert await chunk_puts(url) == puts  # no file went the single path
    await b.sync()
    same_tree(a.folder, b.folder)
    # A second pass sends nothing.
    again = await a.sync()
    assert (again.uploaded_chunks, again.reused_chunks) == (0, 0)


async def test_hostile_batches_get_4xx_and_store_nothing(
    gw: tuple[GatewayConfig, str],
) -> None:
    config, url = gw
    async with aiohttp.ClientSession() as s:
        me, key = await create_account(s, url)
        _, other_key = await create_account(s, url)
        theirs = item()
        status, body = await post_batch(s, url, other_key, encode_batch([theirs]))
        assert (status, body["stored"]) == (200, 1)
        before = await used_bytes(config, me)

        fresh = [item(), item(9000)]
        ids = [h["file_id"] for h, _, _ in fresh]
        header, manifest, chunk = fresh[1]
        short = encode_batch(fresh)[:-1]
        index = json.dumps(
            {"items": [{"header": header, "manifest": manifest, "size": len(chunk) + 16}]}
        ).encode()
        wrong_size = struct.pack(">I", len(index)) + index + chunk + bytes(16)
        cases = {
            "oversized": (bytes(MAX_BATCH_BODY_BYTES + 1), 413),
            "duplicate ids": (encode_batch([fresh[0], fresh[1], fresh[0]]), 422),
            "short body": (short, 422),
            "declared size is not the sealed size": (wrong_size, 422),
            "another account's file id": (encode_batch([*fresh, theirs]), 409),
            "not a batch": (b"\xff\xff\xff\xffnonsense", 400),
        }
        for name, (data, expected) in cases.items():
            status, problem = await post_batch(s, url, key, data)
            assert status == expected, (name, status, problem)
            assert problem["type"] and problem["title"] and problem["detail"], name
            for file_id in ids:
                assert await file_status(s, url, file_id) == 404, name
        assert await used_bytes(config, me) == before
        # The owner of the other file still has it, untouched.
        assert await file_status(s, url, theirs[0]["file_id"]) == 200

        # The same valid batch twice: stored once, then every item "exists".
        status, body = await post_batch(s, url, key, encode_batch(fresh))
        assert (status, body["stored"], body["existing"]) == (200, 2, 0)
        stored = await used_bytes(config, me)
        assert stored > before
        status, body = await post_batch(s, url, key, encode_batch(fresh))
        assert (status, body["stored"], body["existing"]) == (200, 0, 2)
        assert [i["state"] for i in body["items"]] == ["exists", "exists"]
        assert await used_bytes(config, me) == stored
        for file_id in ids:
            assert await file_status(s, url, file_id) == 200


async def test_a_file_left_uploading_by_the_single_path_is_finished_by_a_batch(
    gw: tuple[GatewayConfig, str],
) -> None:
    _, url = gw
    async with aiohttp.ClientSession() as s:
        _, key = await create_account(s, url)
        header, manifest, chunk = item()
        async with s.post(
            f"{url}/v1/files",
            json={"header": header, "manifest": manifest, "price_msat": 0},
            headers=bearer(key),
        ) as r:
            assert r.status == 201
        status, body = await post_batch(s, url, key, encode_batch([(header, manifest, chunk)]))
        assert (status, body["stored"]) == (200, 1)
        async with s.get(f"{url}/v1/files/{header['file_id']}") as r:
            assert (await r.json())["state"] == "complete"
        async with s.get(f"{url}/v1/files/{header['file_id']}/chunks/0", headers=bearer(key)) as r:
            assert r.status == 200
            assert await r.read() == chunk


async def test_kill_9_mid_batches_then_resume_stores_no_item_twice(
    gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    """`bitcache sync` of 3000 small files killed with SIGKILL after a few batches; the
    next run stores only the files not yet stored (at most the batches in flight at the
    kill are sent again, and the gateway answers those "exists"), and another device gets
    the same tree."""
    config, url = gw
    a, b = await devices(url, tmp_path, 2)
    small_tree(a.folder, 3000, seed=2)
    async with BitcacheClient(a.config) as client:
        account = str((await vaults.vault_info(client))["account_id"])

    async def files_stored() -> int:
        [(n,)] = await fetch_all(
            config, "SELECT COUNT(*) FROM files WHERE owner_id = ? AND state = 'complete'", account
        )
        return int(n)

    proc = await bitcache(*sync_args(a, "-q"))

    async def some_batches_stored() -> bool:
        assert proc.returncode is None, "the sync finished before it could be killed"
        return await files_stored() >= 640

    await wait_until("a few batches stored", some_batches_stored, 120, every_s=0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    async def settled() -> bool:  # the killed process's requests ended on the gateway too
        busy = await metric(url, "bitcache_http_requests_in_flight")
        return busy <= len(METRICS_URLS[url])

    await wait_until("the gateway to finish the killed requests", settled, 30, every_s=0.05)
    at_kill = await files_stored()
    assert at_kill < 3000, "nothing was left to resume"
    existing = {"outcome": "exists"}
    exists_before = await metric(url, "bitcache_batch_files_total", **existing)

    summary = await finish(await bitcache(*sync_args(a, "-q")))
    # Each file is stored once: the second run stores exactly the ones not stored before.
    assert uploaded_chunks(summary) == 3000 - at_kill
    assert await files_stored() == 3000
    # Items stored but not yet in the journal at the kill (at most the 4 batches in flight)
    # are answered "exists", not stored again.
    resent = await metric(url, "bitcache_batch_files_total", **existing) - exists_before
    assert resent <= 4 * 64, resent
    await b.sync()
    same_tree(a.folder, b.folder)


async def test_kubo_going_down_mid_batch_records_nothing_and_the_batch_can_be_resent(
    network: Network, tmp_path: Path
) -> None:
    """kubo (behind a proxy) is cut while a batch's chunks are being added: 503, no file
    recorded, the quota untouched, every CID added so far left unreferenced (for the
    unpinner); the same batch sent again once kubo is back stores every file."""
    assert network.kubo is not None
    kubo = TcpProxy("127.0.0.1", int(network.kubo.api_url.rsplit(":", 1)[1]))
    await kubo.start()
    config = gateway_config(network, tmp_path / "gw", kubo_api_url=f"http://127.0.0.1:{kubo.port}")
    try:
        async with serve(config) as url, aiohttp.ClientSession() as s:
            me, key = await create_account(s, url)
            items = [item(20_000) for _ in range(64)]
            ids = [h["file_id"] for h, _, _ in items]
            kubo.slow(0.05)
            posted = asyncio.ensure_future(post_batch(s, url, key, encode_batch(items)))

            async def some_added() -> bool:
                assert not posted.done(), "the batch finished before kubo could be cut"
                return sum(1 for n in kubo.received() if n > 0) >= 2

            await wait_until("a few chunks added to kubo", some_added, 60, every_s=0.01)
            await kubo.cut()
            status, problem = await posted
            assert status == 503, problem
            for file_id in ids:
                assert await file_status(s, url, file_id) == 404
            assert await used_bytes(config, me) == 0
            [(chunks,)] = await fetch_all(config, "SELECT COUNT(*) FROM chunks")
            assert chunks == 0
            [(referenced,)] = await fetch_all(config, "SELECT COUNT(*) FROM pins WHERE refs > 0")
            assert referenced == 0

            await kubo.restore()
            kubo.slow(0)
            status, body = await post_batch(s, url, key, encode_batch(items))
            assert (status, body["stored"]) == (200, 64), body
            [(referenced,)] = await fetch_all(config, "SELECT COUNT(*) FROM pins WHERE refs = 1")
            assert referenced == 64
            assert await used_bytes(config, me) > 64 * 20_000
    finally:
        await kubo.close()
