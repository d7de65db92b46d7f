"""The invoice watcher outlives every kind of failure, against a fake LND REST server.

The fake speaks plain HTTP on loopback and breaks its invoice stream in the ways a real
connection can: closed in the middle of a chunk (aiohttp's ClientPayloadError), a line cut
short (a JSON error), and a database error while booking. After each, the watcher must
log, reconnect and book the settlement exactly once. The same faults against real LND
(through a TCP proxy, and kill -9 of the node) are in tests/integration/test_faults.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.billing.quota import Plan
from gateway.billing.settlement import Settlement
from gateway.billing.watcher import InvoiceWatcher, WatcherPool
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database, open_database
from gateway.tenants.nodes import LightningNodes, connection_key
from gateway.tenants.registry import TenantRegistry
from lightning.lnd import LndRestClient
from rest.session import LazySession

PLAN = Plan(id="p", name="P", quota_bytes=1_000, duration_s=60, price_msat=5_000)


class FakeLnd:
    """Serves /v1/invoices/subscribe once per script entry, then holds the last one open."""

    def __init__(self, scripts: list[str], settled_hash: bytes) -> None:
        self.scripts = scripts
        self.settled_hash = settled_hash
        self.connections = 0
        self.release = asyncio.Event()
        self.settled = False  # what a lookup answers: settled at LND, or still open

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/invoices/subscribe", self.subscribe)
        app.router.add_get("/v1/invoice/{hash}", self.lookup)
        app.router.add_get("/v1/getinfo", self.getinfo)
        return app

    async def getinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"identity_pubkey": "02" + "ab" * 32, "alias": "fake"})

    def _settled_line(self) -> bytes:
        invoice = {
            "r_hash": base64.b64encode(self.settled_hash).decode(),
            "state": "SETTLED",
            "settle_index": "7",
            "value_msat": str(PLAN.price_msat),
            "amt_paid_msat": str(PLAN.price_msat),
        }
        return json.dumps({"result": invoice}).encode() + b"\n"

    async def lookup(self, request: web.Request) -> web.Response:
        if self.settled:
            return web.json_response(json.loads(self._settled_line())["result"])
        # Still open as far as the reconcile can tell: only the stream books it.
        return web.json_response({"r_hash": "", "state": "OPEN"})

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        if script in ("silent", "other"):
            # The plan settles just as the stream starts; its message is lost (LND sends
            # no replay from settle index 0). "silent": nothing more, not even headers (a
            # TLS record cut before the first message); "other": the next message is
            # about another invoice.
            self.settled = True
            if script == "silent":
                await self.release.wait()
                return web.Response()
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        line = self._settled_line()
        if script == "cut":  # half a message, then the connection drops
            await resp.write(line[: len(line) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        if script == "truncated":  # a line cut short, then a clean end of stream
            await resp.write(line[: len(line) // 2] + b"\n")
            await resp.write_eof()
            return resp
        if script == "other":
            other = {"r_hash": base64.b64encode(bytes(32)).decode(), "state": "OPEN"}
            line = json.dumps({"result": other}).encode() + b"\n"
        await resp.write(line)
        await self.release.wait()
        return resp


def _client(url: str) -> LndRestClient:
    client = LndRestClient(url, "unused.cert", b"\x00")
    # Plain HTTP on loopback: no TLS context is needed (or possible without a cert).
    client._http = LazySession(aiohttp.ClientTimeout(total=30, sock_connect=5))
    return client


@pytest.fixture
async def books(tmp_path: Path) -> AsyncIterator[tuple[Database, Settlement, bytes, Any]]:
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:1",
        lnd=LndSettings(rest_url="http://x", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
        tenants=[TenantSettings(plans=[PLAN])],
    )
    db = open_database(config.database_path)
    await db.open()
    account, _ = await AccountStore(db).create("default")
    payment_hash = hashlib.sha256(os.urandom(32)).digest()
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO plan_invoices (payment_hash, account_id, plan_id, amount_msat, bolt11,"
            " created_at, tenant_id) VALUES (?, ?, 'p', ?, 'lnbcrt1', ?, 'default')",
            (payment_hash, account.id, PLAN.price_msat, int(time.time())),
        )
    yield db, Settlement(db, TenantRegistry(config)), payment_hash, config
    await db.close()


async def _bookings(db: Database, payment_hash: bytes) -> int:
    row = await db.fetch_one(
        "SELECT COUNT(*) FROM ledger_transactions WHERE reference = ?", (payment_hash.hex(),)
    )
    assert row is not None
    return int(row[0])


async def _until(what: str, check: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fault", ["cut", "truncated"])
async def test_a_broken_stream_is_logged_and_retried(
    fault: str,
    books: tuple[Database, Settlement, bytes, Any],
    aiohttp_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, settlement, payment_hash, _ = books
    lnd = FakeLnd([fault, fault, "ok"], payment_hash)
    server = await aiohttp_server(lnd.app())
    url = str(server.make_url("")).rstrip("/")
    client = _client(url)
    watcher = InvoiceWatcher(settlement, db, client, url, lambda: ["default"], retry_after_s=1)
    caplog.set_level(logging.INFO, "bitcache.settlement")
    task = asyncio.create_task(watcher.run())
    try:

        async def booked() -> bool:
            return await _bookings(db, payment_hash) == 1

        await _until("the settlement to be booked", booked)
        assert not task.done()  # the watcher is still following the stream
        assert lnd.connections == 3
        failures = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
        assert len(failures) == 2
        expected = "ClientPayloadError" if fault == "cut" else "not JSON"
        assert all(expected in message for message in failures), failures
    finally:
        lnd.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert await _bookings(db, payment_hash) == 1


@pytest.mark.parametrize("script", ["silent", "other"])
async def test_a_settlement_lost_before_anything_was_booked_is_reconciled(
    script: str, books: tuple[Database, Settlement, bytes, Any], aiohttp_server: Any
) -> None:
    """With nothing booked yet the stream starts from settle index 0, from which LND
    replays nothing: a settlement lost as the stream starts is found by the reconcile
    after the first message, or after the idle renewal when no message comes."""
    db, settlement, payment_hash, _ = books
    lnd = FakeLnd([script], payment_hash)
    server = await aiohttp_server(lnd.app())
    url = str(server.make_url("")).rstrip("/")
    client = _client(url)
    watcher = InvoiceWatcher(
        settlement, db, client, url, lambda: ["default"], retry_after_s=1, idle_s=0.3
    )
    task = asyncio.create_task(watcher.run())
    try:

        async def booked() -> bool:
            return await _bookings(db, payment_hash) == 1

        await _until("the lost settlement to be booked", booked)
        assert not task.done()
        if script == "other":
            assert lnd.connections == 1  # found without a reconnection
    finally:
        lnd.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert await _bookings(db, payment_hash) == 1


async def test_a_database_error_while_booking_is_retried(
    books: tuple[Database, Settlement, bytes, Any],
    aiohttp_server: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, settlement, payment_hash, _ = books
    lnd = FakeLnd(["ok"], payment_hash)
    server = await aiohttp_server(lnd.app())
    url = str(server.make_url("")).rstrip("/")
    client = _client(url)
    real_book = settlement.book
    failures = [sqlite3.OperationalError("database is locked")]

    async def flaky_book(*args: Any, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return await real_book(*args, **kwargs)

    monkeypatch.setattr(settlement, "book", flaky_book)
    watcher = InvoiceWatcher(settlement, db, client, url, lambda: ["default"], retry_after_s=1)
    task = asyncio.create_task(watcher.run())
    try:

        async def booked() -> bool:
            return await _bookings(db, payment_hash) == 1

        await _until("the settlement to be booked after the error", booked)
        assert not task.done()
        assert lnd.connections == 2  # the failed booking was replayed from the index
        assert any(
            "failed; retrying" in r.getMessage() and r.exc_info is not None for r in caplog.records
        )
    finally:
        lnd.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_the_pool_restarts_a_watcher_that_ended(
    books: tuple[Database, Settlement, bytes, Any],
    aiohttp_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, settlement, payment_hash, config = books
    lnd = FakeLnd(["ok"], payment_hash)
    server = await aiohttp_server(lnd.app())
    url = str(server.make_url("")).rstrip("/")
    settings = config.lnd.model_copy(update={"rest_url": url})
    nodes = LightningNodes(settings, connect=lambda s: _client(s.rest_url))
    tenants = TenantRegistry(config)
    pool = WatcherPool(settlement, db, tenants, nodes, retry_after_s=1)
    await pool.ensure()
    key = connection_key(settings)
    first = pool._tasks[key]
    try:
        first.cancel()  # ended from outside, as a bug or a stray cancel would
        await asyncio.gather(first, return_exceptions=True)
        await pool.ensure()
        second = pool._tasks[key]
        assert second is not first and not second.done()
        assert any(
            r.levelno == logging.ERROR and "had ended (cancelled); restarting" in r.getMessage()
            for r in caplog.records
        )
        await pool.ensure()  # a running watcher is left alone
        assert pool._tasks[key] is second
    finally:
        lnd.release.set()
        await pool.stop()
        await nodes.close()
