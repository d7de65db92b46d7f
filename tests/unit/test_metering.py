"""Bytes served, metered in batches: exact totals after a flush, nothing lost when a flush
fails, and the last totals written at shutdown.

The meter alone against a fake sink; FileStore.add_served on real SQLite; and the whole
gateway app (FakeNode, an in-memory block store) serving chunks, then shut down.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import app as gateway_app
from gateway.app import create_app
from gateway.billing.metering import ServedMeter
from gateway.config import GatewayConfig, LndSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import open_database
from gateway.persistence.files import FileStore
from ipfs.errors import IpfsNotFound
from lightning.fake import FakeNode
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, new_file_id, new_file_key
from tests.support import upload_raw


class Sink:
    """Records each batch; fails on demand, optionally after counting more meanwhile."""

    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.fail_next = False
        self.meanwhile: tuple[ServedMeter, str, int] | None = None

    async def __call__(self, totals: Mapping[str, int]) -> None:
        await asyncio.sleep(0)  # a real sink awaits the database
        if self.meanwhile is not None:
            meter, file_id, nbytes = self.meanwhile
            meter.add(file_id, nbytes)  # a chunk served while the flush was running
            self.meanwhile = None
        if self.fail_next:
            self.fail_next = False
            raise OSError("database is locked")
        self.batches.append(dict(totals))

    def written(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for batch in self.batches:
            for file_id, nbytes in batch.items():
                out[file_id] = out.get(file_id, 0) + nbytes
        return out


async def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_totals_are_exact_after_a_flush_in_one_batch() -> None:
    sink = Sink()
    meter = ServedMeter(sink)
    for size in (100, 200, 300):
        meter.add("a", size)
    meter.add("b", 7)
    meter.add("c", 0)  # nothing served: nothing written
    assert await meter.flush() == 2
    assert sink.batches == [{"a": 600, "b": 7}]
    assert meter.pending == {}
    assert await meter.flush() == 0 and len(sink.batches) == 1  # nothing new: no write


async def test_a_failed_flush_loses_nothing_and_counts_nothing_twice() -> None:
    sink = Sink()
    meter = ServedMeter(sink)
    meter.add("a", 1000)
    sink.fail_next = True
    sink.meanwhile = (meter, "a", 5)
    with pytest.raises(OSError):
        await meter.flush()
    assert meter.pending == {"a": 1005}
    await meter.flush()
    assert sink.written() == {"a": 1005}


async def test_run_flushes_every_interval_and_once_more_when_stopped() -> None:
    sink = Sink()
    meter = ServedMeter(sink)
    task = asyncio.create_task(meter.run(0.01))
    meter.add("a", 10)
    await wait_for(lambda: sink.written() == {"a": 10})
    sink.fail_next = True  # a failing flush is retried by the next one
    meter.add("a", 5)
    await wait_for(lambda: sink.written() == {"a": 15})
    meter.add("b", 3)
    meter.stop()
    await asyncio.wait_for(task, 5)
    assert sink.written() == {"a": 15, "b": 3}


async def test_stop_flushes_at_once_without_waiting_for_the_interval() -> None:
    sink = Sink()
    meter = ServedMeter(sink)
    task = asyncio.create_task(meter.run(3600))
    meter.add("a", 42)
    await asyncio.sleep(0)
    meter.stop()
    await asyncio.wait_for(task, 5)
    assert sink.written() == {"a": 42}


async def test_add_served_writes_every_file_in_one_transaction(tmp_path: Path) -> None:
    db = open_database(tmp_path / "g.sqlite3")
    await db.open()
    try:
        files = FileStore(db)
        account, _ = await AccountStore(db).create("default")
        ids = []
        for _ in range(3):
            enc = FileEncryptor(new_file_key(), new_file_id(), MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
            record, _ = await files.create(enc.header, b"m", 0, account.id, 10**12, "default")
            ids.append(record.id)
        meter = ServedMeter(files.add_served)
        for n, file_id in enumerate(ids):
            for _ in range(n + 1):
                meter.add(file_id, 1000 + n)
        assert await meter.flush() == 3
        usage = {u.id: u.bytes_served for u in await files.usage(account.id)}
        assert usage == {ids[0]: 1000, ids[1]: 2 * 1001, ids[2]: 3 * 1002}
    finally:
        await db.close()


# --- the gateway app: chunks served, then shut down ----------------------------------------


class MemoryStore:
    """An in-memory BlockStore; CIDs are content hashes."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}

    async def add(self, data: bytes, pin: bool = True) -> str:
        cid = "bafk" + hashlib.sha256(data).hexdigest()
        self.blocks[cid] = bytes(data)
        return cid

    async def cat(self, cid: str) -> bytes:
        if cid not in self.blocks:
            raise IpfsNotFound(cid)
        return self.blocks[cid]

    async def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        data = await self.cat(cid)
        for at in range(0, len(data), 1000):
            yield data[at : at + 1000]

    async def pin_add(self, cid: str) -> None:
        pass

    async def pin_rm(self, cid: str) -> None:
        pass

    async def stat_size(self, cid: str) -> int:
        return len(await self.cat(cid))

    async def version(self) -> str:
        return "memory"

    async def close(self) -> None:
        pass


async def test_the_gateway_writes_bytes_served_at_shutdown(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "METER_INTERVAL_S", 3600.0)  # only the final flush
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
    )
    store = MemoryStore()
    app = create_app(config, connect=lambda _: FakeNode(), block_store=lambda _: store)
    server = await aiohttp_server(app)
    gw = str(server.make_url("")).rstrip("/")
    plaintext = os.urandom(3 * MIN_CHUNK_SIZE - 5)
    async with aiohttp.ClientSession() as session:
        up = await upload_raw(session, gw, plaintext, price_msat=0, chunk_size=MIN_CHUNK_SIZE)
        expected = 0
        for index in (0, 1, 2, 2, 0):
            async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/{index}") as resp:
                assert resp.status == 200
                assert await resp.read() == up.sealed[index]
                expected += len(up.sealed[index])
    await server.close()  # SIGTERM's path: requests done, then the app's cleanup
    with sqlite3.connect(config.database_path) as conn:
        [(served,)] = conn.execute(
            "SELECT bytes_served FROM files WHERE id = ?", (up.file_id,)
        ).fetchall()
    assert (
        served == expected == 2 * len(up.sealed[0]) + 1 * len(up.sealed[1]) + 2 * len(up.sealed[2])
    )
