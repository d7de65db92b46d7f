"""Money survives faults, on the real regtest network: streams that drop, LND killed,
the gateway killed, the client killed, two gateway processes on one database.

Every test ends by checking the books against LND (tests/ledger_check.py): each payment
booked exactly once, for exactly what the node received or paid. The matrix of which fault
at which stage is shown by which test is docs/fault-matrix.md.

This module starts its own network: killing and restarting its LND nodes must not reach
tests elsewhere that share the session's network.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from client.api import BitcacheClient
from gateway.billing.quota import Plan
from gateway.config import GatewayConfig, TenantSettings
from gateway.server import serve
from gateway.tenants.nodes import connection_key
from regtest.network import Network, wait_until
from sandbox.run import sandbox_client_config
from storage.crypto import FileEncryptor, b64url_encode, new_file_id, new_file_key
from tests.conftest import gateway_config
from tests.gateway_process import GatewayProcess
from tests.ledger_check import bookings, check_books
from tests.sql import execute, fetch_all, fetch_value
from tests.support import TcpProxy, bearer, create_account, random_bytes, upload_raw

pytestmark = pytest.mark.integration

CHUNK = 4096
MIB = 1 << 20
PRICE = 1_000  # msat per chunk
OPERATOR = "operator-" + secrets.token_hex(8)
PLAN = Plan(id="pro", name="Pro", quota_bytes=10_000_000, duration_s=3600, price_msat=25_000)
TENANT = TenantSettings(free_quota_bytes=200_000, operator_fee_bps=1_000, plans=[PLAN])


@pytest.fixture(scope="module")
async def network() -> AsyncIterator[Network]:
    """This module's own network (see the module docstring)."""
    async with Network.start() as net:
        yield net


def config(
    network: Network, data_dir: Path, lnd_port: int | None = None, **overrides: Any
) -> GatewayConfig:
    """A gateway with one plan, a fast maintenance loop and fast LND retries; its LND REST
    calls go to `lnd_port` (a proxy) when given."""
    values: dict[str, Any] = {
        "tenants": [TENANT],
        "operator_token": OPERATOR,
        "maintenance_interval_s": 0.5,
        "retry_after_s": 1,
    }
    port = overrides.pop("port", None)
    cfg = gateway_config(network, data_dir, **(values | overrides))
    if port is not None:
        cfg = cfg.model_copy(update={"port": port})
    if lnd_port is not None:
        lnd = cfg.lnd.model_copy(update={"rest_url": f"https://127.0.0.1:{lnd_port}"})
        cfg = cfg.model_copy(update={"lnd": lnd})
    return cfg


async def lnd_proxy(network: Network) -> TcpProxy:
    proxy = TcpProxy("127.0.0.1", network.node("gateway").rest_port)
    await proxy.start()
    return proxy


async def books(cfg: GatewayConfig, network: Network) -> Any:
    return await check_books(cfg, network.node("gateway").client)


# --- what each test sells and buys -----------------------------------------------------------


async def plan_and_chunk_invoices(
    session: aiohttp.ClientSession, gw: str, key: str, network: Network
) -> list[tuple[str, bytes]]:
    """(bolt11, payment hash) of a plan invoice for the account and a 2-chunk invoice for a
    file it uploaded. Nobody presents the chunk preimage to the gateway: only the invoice
    watcher (or the reconcile) can book these two."""
    async with session.post(
        f"{gw}/v1/account/plans", json={"plan_id": PLAN.id}, headers=bearer(key)
    ) as resp:
        assert resp.status == 201, await resp.text()
        plan = (await resp.json())["invoice"]
    up = await upload_raw(
        session, gw, random_bytes(2 * CHUNK), price_msat=PRICE, chunk_size=CHUNK, api_key=key
    )
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count=2") as resp:
        assert resp.status == 402
        challenge = await resp.json()
    chunk = challenge["invoice"]
    CHALLENGES[chunk] = (up.file_id, challenge["macaroon"])
    payer = network.node("payer").client
    return [(b, (await payer.decode_invoice(b)).payment_hash) for b in (plan, chunk)]


# chunk invoice → (file id, macaroon) of its challenge, for tests that use the token
CHALLENGES: dict[str, tuple[str, str]] = {}


async def pay(network: Network, invoices: list[tuple[str, bytes]]) -> None:
    payer = network.node("payer").client
    for bolt11, payment_hash in invoices:
        payment = await payer.pay_invoice(bolt11, fee_limit_msat=1_000)
        assert payment.payment_hash == payment_hash


async def wait_booked_once(
    cfg: GatewayConfig, invoices: list[tuple[str, bytes]], timeout_s: float = 20
) -> None:
    """Every invoice booked within `timeout_s`, and exactly once."""

    async def booked() -> bool:
        return all([await bookings(cfg, h.hex()) >= 1 for _, h in invoices])

    await wait_until("the payments to be booked", booked, timeout_s, every_s=0.1)
    counts = [await bookings(cfg, h.hex()) for _, h in invoices]
    assert counts == [1] * len(invoices)


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# --- 1. the invoice watcher ------------------------------------------------------------------


async def test_invoice_stream_cut_mid_message_books_every_payment_once(
    network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy between gateway and LND cuts the invoice stream in the middle of a TLS
    record, three times:

    1. before the stream's first message (LND sends its HTTP headers with it): asyncio
       may never report that close (it depends on where the TLS record is cut), so the
       stream looks idle; the watcher renews an idle stream after lnd_stream_idle_s;
    2. in the middle of a message of an established stream: aiohttp raises
       ClientPayloadError at once, the watcher logs it and reconnects;
    3. in the middle of the very message that carries a plan's settlement: with nothing
       booked yet the stream starts from settle index 0, from which LND replays nothing,
       so only a reconcile finds that settlement if it was the stream's first message.

    Then a plan and a chunk invoice are paid: both booked within seconds, exactly once."""
    caplog.set_level(logging.INFO, "bitcache.settlement")
    proxy = await lnd_proxy(network)
    cfg = config(network, tmp_path, proxy.port, lnd_stream_idle_s=3)
    gateway_node = network.node("gateway").client

    async def cut_stream(min_received: int) -> int:
        """Cuts the stream mid-message once it has carried `min_received` bytes (the TLS
        handshake is about 1 kB, a message with headers 1.4 kB); returns the bytes let
        through. Each try adds an invoice, which LND announces on the stream."""
        cut: asyncio.Future[int] | None = None

        async def done() -> bool:
            nonlocal cut
            if cut is None and any(n >= min_received for n in proxy.received()):
                cut = proxy.cut_mid_message()
            await gateway_node.create_invoice(1_000, "stream probe", expiry_s=60)
            if cut is not None:
                await asyncio.wait([cut], timeout=1)
            return cut is not None and cut.done()

        await wait_until("a stream message to be cut", done, 30, every_s=0.1)
        assert cut is not None
        return cut.result()

    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        # 1. Before the first message: no error is ever raised; the renewal saves it.
        # Dropping every connection first makes the watcher's new stream the only
        # connection there is, one that has carried its TLS handshake and nothing else.
        await wait_until("the stream to connect", lambda: _true(proxy.received()), 10)
        accepted = proxy.accepted
        await proxy.cut()
        await proxy.restore()
        await wait_until(
            "the stream to reconnect",
            lambda: _true(proxy.accepted > accepted and any(proxy.received())),
            timeout_s=10,
        )
        connections = proxy.accepted
        assert await cut_stream(min_received=1) > 0
        await wait_until(
            "the idle stream to be renewed",
            lambda: _true(proxy.accepted > connections),
            timeout_s=10,
        )
        # 2. An established stream, mid-message: the connection an invoice announcement
        # just crossed (more than a TLS session ticket, ~200 B) is the stream, past its
        # first message. A connection merely past its handshake would hang as in 1.
        cut: asyncio.Future[int] | None = None

        async def cut_established() -> bool:
            nonlocal cut
            before = proxy.received_by_connection()
            await gateway_node.create_invoice(1_000, "stream probe", expiry_s=60)
            deadline = time.monotonic() + 1
            stream: set[int] = set()
            while not stream and time.monotonic() < deadline:  # the announcement passing
                await asyncio.sleep(0.02)
                now = proxy.received_by_connection()
                stream = {c for c, n in now.items() if before.get(c, 0) and n - before[c] > 800}
            if not stream:
                return False
            cut = proxy.cut_mid_message(only=stream)
            await gateway_node.create_invoice(1_000, "stream probe", expiry_s=60)
            await asyncio.wait([cut], timeout=1)
            return cut.done()

        await wait_until("an established stream to be cut", cut_established, 30, every_s=0.1)
        await wait_until(
            "the watcher to log the cut",
            lambda: _true(messages(caplog, "ClientPayloadError")),
            timeout_s=20,
        )
        # 3. The message that carries the plan's settlement.
        invoices = await plan_and_chunk_invoices(session, gw, key, network)
        cut = proxy.cut_mid_message()
        await pay(network, invoices[:1])
        assert await asyncio.wait_for(cut, 10) > 0
        await pay(network, invoices[1:])
        await wait_booked_once(cfg, invoices)
        report = await books(cfg, network)
        assert report.count("plan_purchase") == 1 and report.count("chunk_sale") == 1
    await proxy.close()


async def _true(value: object) -> bool:
    return bool(value)


BOOKINGS = "SELECT COUNT(*) FROM ledger_transactions WHERE reference = "


@asynccontextmanager
async def writes_locked(cfg: GatewayConfig) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """Another connection keeps every booking out while the block runs; yields how many
    bookings name a reference, read through that connection (opening the gateway's
    database anew would migrate it, which needs the very lock held here).

    SQLite: an open `BEGIN EXCLUSIVE` (the file's write lock). PostgreSQL: a transaction
    holding `ledger_transactions`, which every booking writes, in EXCLUSIVE mode."""
    if not cfg.uses_postgres:
        locker = sqlite3.connect(cfg.database_path, isolation_level=None)

        async def booked_sqlite(reference: str) -> int:
            return int(locker.execute(BOOKINGS + "?", (reference,)).fetchone()[0])

        try:
            locker.execute("BEGIN EXCLUSIVE")
            yield booked_sqlite
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    assert cfg.database_url is not None
    conn = await asyncpg.connect(cfg.database_url.split("?")[0])

    async def booked_postgres(reference: str) -> int:
        return int(await conn.fetchval(BOOKINGS + "$1", reference))

    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE ledger_transactions IN EXCLUSIVE MODE")
            yield booked_postgres  # leaving the block commits a transaction that wrote nothing
    finally:
        await conn.close()


async def test_a_database_error_while_booking_is_retried(
    network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock past the gateway's lock wait while a plan
    is paid: booking fails (SQLite: "database is locked" after its 5 s busy timeout;
    PostgreSQL: "canceling statement due to lock timeout"); the watcher logs it, backs
    off, and books it once the lock is gone.

    On PostgreSQL a lock wait only ends in the 60 s command timeout, so the gateway's
    connections get a `lock_timeout` of 2 s here (a server setting in the URL; asyncpg
    passes it on), the counterpart of SQLite's busy timeout."""
    caplog.set_level(logging.INFO, "bitcache.settlement")
    cfg = config(network, tmp_path)
    if cfg.uses_postgres:
        cfg = cfg.model_copy(update={"database_url": f"{cfg.database_url}?lock_timeout=2s"})
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        invoices = await plan_and_chunk_invoices(session, gw, key, network)
        async with writes_locked(cfg) as booked:
            await pay(network, invoices)
            await wait_until(
                "a booking to fail on the lock",
                lambda: _true(messages(caplog, "failed; retrying")),
                timeout_s=30,
            )
            assert await booked(invoices[0][1].hex()) == 0
        await wait_booked_once(cfg, invoices, timeout_s=20)
        await books(cfg, network)


async def test_a_watcher_task_that_ends_is_restarted(
    network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bitcache.settlement")
    cfg = config(network, tmp_path)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        name = f"invoices {connection_key(cfg.lnd)}"

        def watchers() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]

        await wait_until("the watcher to start", lambda: _true(watchers()), 10)
        (first,) = watchers()
        first.cancel()  # ended from outside: a stray cancel, or a bug
        await wait_until(
            "the pool to restart the watcher",
            lambda: _true([t for t in watchers() if t is not first]),
            timeout_s=10,
        )
        assert messages(caplog, "had ended (cancelled); restarting")
        invoices = await plan_and_chunk_invoices(session, gw, key, network)
        await pay(network, invoices)
        await wait_booked_once(cfg, invoices)
        await books(cfg, network)


async def test_lnd_kill_9_while_the_gateway_runs(
    network: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of the gateway's LND node and a restart on the same data and ports, with
    the gateway running throughout: invoices made before the crash and paid after it are
    booked within seconds, once."""
    caplog.set_level(logging.INFO, "bitcache.settlement")
    cfg = config(network, tmp_path)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        invoices = await plan_and_chunk_invoices(session, gw, key, network)
        before = len(caplog.records)
        await network.restart_node("gateway", crash=True)
        assert any(
            "invoice stream" in r.getMessage() or "invoice watcher" in r.getMessage()
            for r in caplog.records[before:]
        )
        await pay(network, invoices)
        await wait_booked_once(cfg, invoices, timeout_s=15)
        # The gateway serves new invoices again, and those are booked too.
        more = await plan_and_chunk_invoices(session, gw, key, network)
        await pay(network, more)
        await wait_booked_once(cfg, more)
        await books(cfg, network)


# --- 2. resuming from the settle index -------------------------------------------------------


async def set_settle_index(cfg: GatewayConfig, value: int) -> None:
    """What the gateway stored as the last settle index it booked (stopped gateway only)."""
    await execute(
        cfg,
        "INSERT INTO gateway_state (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        "lnd_settle_index:" + connection_key(cfg.lnd),
        str(value),  # a TEXT column
    )


async def stored_settle_index(cfg: GatewayConfig) -> int:
    value = await fetch_value(
        cfg,
        "SELECT value FROM gateway_state WHERE key = ?",
        "lnd_settle_index:" + connection_key(cfg.lnd),
    )
    return 0 if value is None else int(value)


async def test_the_settle_index_books_what_only_it_sees_and_a_restart_books_nothing_twice(
    network: Network, tmp_path: Path
) -> None:
    """A chunk invoice already marked expired here (as expire_stale does) is paid while
    the gateway is down. The start-up reconcile only looks at open invoices, so only the
    stream resumed from the stored settle index can book it: shown by a negative control
    (stored index already past the payment: never booked, while a later payment is) and
    the real case (stored index before it: booked). Replays never book twice."""
    cfg = config(network, tmp_path)
    gateway_node = network.node("gateway").client
    async with aiohttp.ClientSession() as session:
        async with serve(cfg) as gw:
            _, key = await create_account(session, gw)
            (plan, plan_hash), (chunk, chunk_hash) = await plan_and_chunk_invoices(
                session, gw, key, network
            )
        # The gateway is down. The chunk invoice is marked expired, then paid after all.
        expired = await execute(
            cfg, "UPDATE invoices SET state = 'expired' WHERE bolt11 = ?", chunk
        )
        assert expired == 1
        await pay(network, [(chunk, chunk_hash)])
        chunk_index = (await gateway_node.lookup_invoice(chunk_hash)).settle_index
        assert chunk_index > 0

        # Negative control: the stored index is already past the payment.
        await set_settle_index(cfg, chunk_index)
        async with serve(cfg):
            await pay(network, [(plan, plan_hash)])
            await wait_booked_once(cfg, [(plan, plan_hash)])  # the stream is past it now
            assert await bookings(cfg, chunk_hash.hex()) == 0

        # The real case: the index from before the payment.
        await set_settle_index(cfg, chunk_index - 1)
        async with serve(cfg):
            await wait_booked_once(cfg, [(chunk, chunk_hash)])
            plan_index = (await gateway_node.lookup_invoice(plan_hash)).settle_index

            async def replayed() -> bool:
                return await stored_settle_index(cfg) >= plan_index

            # The plan's settlement came again in that replay: booked once all the same.
            await wait_until("the replay to pass the plan", replayed, 10, every_s=0.1)
            assert await bookings(cfg, plan_hash.hex()) == 1

        # Replay everything LND settled (1 is the lowest index that asks for a replay;
        # 0 means "only new events"): nothing is booked twice.
        await set_settle_index(cfg, 1)
        async with serve(cfg):
            await wait_until("the full replay", replayed, 15, every_s=0.1)
        assert await bookings(cfg, chunk_hash.hex()) == 1
        assert await bookings(cfg, plan_hash.hex()) == 1
        report = await books(cfg, network)
        assert report.count("chunk_sale") == 1 and report.count("plan_purchase") == 1


# --- 3. withdrawals off the happy path -------------------------------------------------------

RESERVE = 1_000  # the minimum routing-fee reserve held on top of each withdrawal


async def earn(
    session: aiohttp.ClientSession, gw: str, network: Network, chunks: int, price: int = 10_000
) -> tuple[str, int]:
    """(API key, balance) of a new account that sold `chunks` chunks to the payer node."""
    _, key = await create_account(session, gw)
    up = await upload_raw(
        session,
        gw,
        random_bytes(chunks * CHUNK),
        price_msat=price,
        chunk_size=CHUNK,
        api_key=key,
    )
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count={chunks}") as resp:
        body = await resp.json()
    payment = await network.node("payer").client.pay_invoice(body["invoice"], 1_000)
    token = {"Authorization": f"L402 {body['macaroon']}:{payment.preimage.hex()}"}
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/{chunks - 1}", headers=token) as r:
        assert r.status == 200  # the preimage books the sale at once
    paid = price * chunks
    expected = paid - paid * TENANT.operator_fee_bps // 10_000
    assert await balance(session, gw, key) == expected
    return key, expected


async def balance(session: aiohttp.ClientSession, gw: str, key: str) -> int:
    async with session.get(f"{gw}/v1/account", headers=bearer(key)) as resp:
        assert resp.status == 200
        return int((await resp.json())["balance_msat"])


async def withdraw(
    session: aiohttp.ClientSession, gw: str, key: str, bolt11: str, idempotency_key: str
) -> tuple[int, dict[str, Any]]:
    headers = bearer(key) | {"Idempotency-Key": idempotency_key}
    async with session.post(
        f"{gw}/v1/account/withdrawals", json={"invoice": bolt11}, headers=headers
    ) as resp:
        return resp.status, dict(await resp.json())


async def withdrawal(
    session: aiohttp.ClientSession, gw: str, key: str, withdrawal_id: str
) -> dict[str, Any]:
    async with session.get(
        f"{gw}/v1/account/withdrawals/{withdrawal_id}", headers=bearer(key)
    ) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def wait_state(
    session: aiohttp.ClientSession, gw: str, key: str, withdrawal_id: str, state: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        found.update(await withdrawal(session, gw, key, withdrawal_id))
        return bool(found["state"] == state)

    await wait_until(f"withdrawal {withdrawal_id} to be {state}", reached, 30, every_s=0.2)
    return found


class HeldInvoice:
    """A hold invoice on the payer node: a payment to it stays in flight until the test
    settles or cancels it, which is how a slow route looks from the paying side."""

    def __init__(self, network: Network, amount_msat: int) -> None:
        self.node = network.node("payer").client
        self.amount_msat = amount_msat
        self.preimage = os.urandom(32)
        self.payment_hash = hashlib.sha256(self.preimage).digest()
        self.bolt11 = ""

    async def create(self) -> HeldInvoice:
        self.bolt11 = await self.node.add_hold_invoice(
            self.payment_hash, self.amount_msat, "withdrawal held in flight"
        )
        return self

    async def wait_accepted(self) -> None:
        async def accepted() -> bool:
            return (await self.node.lookup_invoice(self.payment_hash)).state == "accepted"

        await wait_until("the payment to reach the hold invoice", accepted, 30, every_s=0.1)

    async def finish(self, outcome: str) -> None:
        if outcome == "paid":
            await self.node.settle_invoice(self.preimage)
        else:
            await self.node.cancel_invoice(self.payment_hash)


async def test_a_withdrawal_in_flight_answers_202_and_get_follows_it(
    network: Network, tmp_path: Path
) -> None:
    cfg = config(network, tmp_path, withdrawal_answer_within_s=1)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        key, earned = await earn(session, gw, network, chunks=3)
        held = await HeldInvoice(network, 10_000).create()
        status, body = await withdraw(session, gw, key, held.bolt11, "held-" + secrets.token_hex(4))
        assert status == 202 and body["state"] == "pending"
        wid = body["withdrawal_id"]
        assert body["amount_msat"] == 10_000 and body["fee_reserve_msat"] == RESERVE
        assert (await withdrawal(session, gw, key, wid))["state"] == "pending"
        assert await balance(session, gw, key) == earned - 10_000 - RESERVE  # held
        _, stranger = await create_account(session, gw)
        for who, what in ((stranger, wid), (key, "wd_0000000000000000")):
            async with session.get(
                f"{gw}/v1/account/withdrawals/{what}", headers=bearer(who)
            ) as resp:
                assert resp.status == 404
                assert (await resp.json())["type"].endswith("not-found")
        await held.wait_accepted()
        await held.finish("paid")
        done = await wait_state(session, gw, key, wid, "succeeded")
        assert done["fee_paid_msat"] == 0  # one direct channel
        assert await balance(session, gw, key) == earned - 10_000  # the reserve came back
        assert await bookings(cfg, wid) == 2  # hold, settle
        await books(cfg, network)


@pytest.mark.parametrize("when", ["at once", "after 202"])
async def test_a_failed_withdrawal_releases_the_hold(
    when: str, network: Network, tmp_path: Path
) -> None:
    cfg = config(network, tmp_path, withdrawal_answer_within_s=1)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        key, earned = await earn(session, gw, network, chunks=2)
        idem = "fail-" + secrets.token_hex(4)
        if when == "at once":  # an invoice its payee has canceled: LND fails the payment
            payer = network.node("payer").client
            invoice = await payer.create_invoice(5_000, "canceled before paid")
            await payer.cancel_invoice(invoice.payment_hash)
            status, body = await withdraw(session, gw, key, invoice.bolt11, idem)
            assert status == 402 and body["state"] == "failed" and body["failure"]
        else:  # in flight first (202), then the payee cancels it
            held = await HeldInvoice(network, 5_000).create()
            status, body = await withdraw(session, gw, key, held.bolt11, idem)
            assert status == 202
            await held.wait_accepted()
            await held.finish("canceled")
            body = await wait_state(session, gw, key, body["withdrawal_id"], "failed")
        assert body["fee_paid_msat"] is None
        assert await balance(session, gw, key) == earned  # all of it back
        assert await bookings(cfg, body["withdrawal_id"]) == 2  # hold, release
        report = await books(cfg, network)
        assert report.count("withdrawal_release") == 1 and report.count("withdrawal_settle") == 0


async def test_a_withdrawal_whose_requester_vanishes_is_still_finished_once(
    network: Network, tmp_path: Path
) -> None:
    """The client that asked for a withdrawal goes away (killed, disconnected) while the
    payment is in flight: the gateway follows the payment to its end all the same."""
    cfg = config(network, tmp_path, withdrawal_answer_within_s=60)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        key, earned = await earn(session, gw, network, chunks=2)
        held = await HeldInvoice(network, 6_000).create()
        idem = "vanish-" + secrets.token_hex(4)
        doomed = aiohttp.ClientSession()
        request = asyncio.create_task(withdraw(doomed, gw, key, held.bolt11, idem))
        await held.wait_accepted()
        request.cancel()  # the client's connection goes with it
        await asyncio.gather(request, return_exceptions=True)
        await doomed.close()
        await held.finish("paid")
        status, body = await withdraw(session, gw, key, held.bolt11, idem)  # same key: same one
        assert status in (200, 202)
        await wait_state(session, gw, key, body["withdrawal_id"], "succeeded")
        assert await balance(session, gw, key) == earned - 6_000
        assert await bookings(cfg, body["withdrawal_id"]) == 2
        await books(cfg, network)


@pytest.mark.parametrize("outcome", ["paid", "canceled"])
async def test_kill_9_of_the_gateway_during_a_withdrawal(
    outcome: str, network: Network, tmp_path: Path
) -> None:
    """The gateway process is killed while its payment is in flight; the payment then
    ends (paid, or canceled by the payee) while it is down or restarting. The reconcile
    of the restarted process finishes the withdrawal exactly once."""
    gateway = GatewayProcess(config(network, tmp_path, port=0))
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            key, earned = await earn(session, gateway.url, network, chunks=3)
            held = await HeldInvoice(network, 12_000).create()
            idem = "crash-" + secrets.token_hex(4)
            request = asyncio.create_task(withdraw(session, gateway.url, key, held.bolt11, idem))
            await held.wait_accepted()  # the HTLC is locked in: the payment is in flight
            await gateway.kill()
            with pytest.raises(aiohttp.ClientError):
                await request
            await held.finish(outcome)
            await gateway.start()
            # The same request again (same key) names the withdrawal without paying again.
            status, body = await withdraw(session, gateway.url, key, held.bolt11, idem)
            assert status in (200, 202, 402), body
            wid = body["withdrawal_id"]
            state = "succeeded" if outcome == "paid" else "failed"
            await wait_state(session, gateway.url, key, wid, state)
            expected = earned - 12_000 if outcome == "paid" else earned
            assert await balance(session, gateway.url, key) == expected
            assert await bookings(gateway.config, wid) == 2
            await books(gateway.config, network)
    finally:
        await gateway.stop()


@pytest.mark.parametrize("fault", ["connection cut", "lnd kill -9"])
async def test_lnd_down_during_a_withdrawal(fault: str, network: Network, tmp_path: Path) -> None:
    """The gateway loses its LND node while a withdrawal is in flight: the answer is 202
    (outcome unknown), the withdrawal stays pending (the reconcile cannot ask LND), and
    once LND answers again the reconcile books what LND did: paid, with its fee, once."""
    proxy = await lnd_proxy(network)
    cfg = config(network, tmp_path, proxy.port, withdrawal_answer_within_s=60)
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        key, earned = await earn(session, gw, network, chunks=3)
        held = await HeldInvoice(network, 8_000).create()
        request = asyncio.create_task(
            withdraw(session, gw, key, held.bolt11, "down-" + secrets.token_hex(4))
        )
        await held.wait_accepted()
        if fault == "connection cut":
            await proxy.cut()
        else:
            await network.node("gateway").process.kill()
        status, body = await asyncio.wait_for(request, 30)
        assert status == 202 and body["state"] == "pending"  # answered without waiting 60 s
        wid = body["withdrawal_id"]
        await held.finish("paid")  # the payee takes the money while LND is out of reach
        assert (await withdrawal(session, gw, key, wid))["state"] == "pending"
        assert await balance(session, gw, key) == earned - 8_000 - RESERVE
        # Meanwhile uploads go on (they need no LND); whatever needs an invoice is a 503
        # with Retry-After, and nothing is charged.
        up = await upload_raw(
            session, gw, random_bytes(CHUNK), price_msat=PRICE, chunk_size=CHUNK, api_key=key
        )
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        async with session.post(
            f"{gw}/v1/account/plans", json={"plan_id": PLAN.id}, headers=bearer(key)
        ) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        if fault == "connection cut":
            await proxy.restore()
        else:
            await network.start_node("gateway")
        done = await wait_state(session, gw, key, wid, "succeeded")
        assert done["fee_paid_msat"] == 0
        assert await balance(session, gw, key) == earned - 8_000
        assert await bookings(cfg, wid) == 2
        await books(cfg, network)
    await proxy.close()


# --- 6. two gateway processes on one database ------------------------------------------------


async def create_file(session: aiohttp.ClientSession, gw: str, key: str, size: int) -> int:
    """POST /v1/files for a file of `size` bytes (nothing uploaded); the status."""
    enc = FileEncryptor(new_file_key(), new_file_id(), size, CHUNK)
    body = {"header": enc.header.to_json_dict(), "manifest": b64url_encode(b"m" * 60)}
    async with session.post(f"{gw}/v1/files", json=body, headers=bearer(key)) as resp:
        await resp.read()
        return resp.status


async def test_two_gateway_processes_on_one_database_stay_exact(
    network: Network, tmp_path: Path
) -> None:
    """Two `python -m gateway` processes on one database (the engine under test),
    started together (both migrate the new database), every request spread over both:
    parallel uploads against one quota never overshoot it, and 100 concurrent
    withdrawals pay out exactly what the balance holds."""
    shared = tmp_path / "shared"
    a = GatewayProcess(config(network, shared, port=0), name="a")
    b = GatewayProcess(config(network, shared, port=0), name="b")
    await asyncio.gather(a.start(), b.start())
    try:
        both = [a.url, b.url]
        async with aiohttp.ClientSession() as session:
            _, key = await create_account(session, a.url)
            statuses = await asyncio.gather(
                *(create_file(session, both[i % 2], key, 9_000) for i in range(40))
            )
            per_file = 9_000 + 40 * 3 + 60  # plaintext, per-chunk overhead, manifest
            fits = TENANT.free_quota_bytes // per_file
            assert statuses.count(201) == fits and statuses.count(507) == 40 - fits
            async with session.get(f"{b.url}/v1/account", headers=bearer(key)) as resp:
                assert (await resp.json())["used_bytes"] == fits * per_file

            key, earned = await earn(session, a.url, network, chunks=5)
            assert earned == 45_000
            # Three holds of 14 000 + 1 000 reserve take all of it; a fourth never fits,
            # even after the first ones settle and give their reserve back.
            amount = 14_000
            payer = network.node("payer").client
            invoices = [await payer.create_invoice(amount, f"race {i}") for i in range(100)]
            results = await asyncio.gather(
                *(
                    withdraw(session, both[i % 2], key, inv.bolt11, f"race-{i:03d}-{key[-6:]}")
                    for i, inv in enumerate(invoices)
                )
            )
            codes = [status for status, _ in results]
            assert codes.count(200) == 3 and codes.count(409) == 97, codes
            paid = [
                inv
                for inv in invoices
                if (await payer.lookup_invoice(inv.payment_hash)).state == "settled"
            ]
            assert len(paid) == 3
            assert await balance(session, b.url, key) == earned - 3 * amount
            report = await books(a.config, network)
            assert report.count("withdrawal_settle") == 3
            assert report.count("withdrawal_release") == 0
            for gateway in (a, b):
                assert "Traceback" not in gateway.log(), gateway.log()[-3000:]
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_one_process_never_releases_a_payout_the_other_is_sending(
    network: Network, tmp_path: Path
) -> None:
    """Process `slow` reaches LND through a link that delays every message by 1.5 s, so
    its payment reaches LND seconds after it recorded the withdrawal, while process
    `quick` reconciles five times a second. The withdrawal is paid once and never
    released. (Before withdrawals recorded their node connection, `quick` asked LND
    directly, heard "unknown" and released the hold of a payout that then happened; it
    now asks through the recorded connection, and releases an unknown payment only
    after its invoice has expired: unit test
    test_withdrawal_nodes::test_a_payment_unknown_to_lnd_is_held_until_its_invoice_expired.)"""
    proxy = await lnd_proxy(network)
    shared = tmp_path / "shared"
    quick = GatewayProcess(config(network, shared, port=0, maintenance_interval_s=0.2), "quick")
    await quick.start()
    slow = GatewayProcess(config(network, shared, proxy.port, port=0), "slow")
    await slow.start()
    try:
        async with aiohttp.ClientSession() as session:
            key, earned = await earn(session, quick.url, network, chunks=3)
            invoice = await network.node("payer").client.create_invoice(9_000, "slow payout")
            proxy.slow(1.5)
            status, body = await withdraw(
                session, slow.url, key, invoice.bolt11, "slow-" + secrets.token_hex(4)
            )
            proxy.slow(0)
            assert status == 200 and body["state"] == "succeeded", body
            wid = body["withdrawal_id"]
            assert await balance(session, quick.url, key) == earned - 9_000
            assert await bookings(slow.config, wid) == 2  # hold, settle
            report = await books(slow.config, network)
            assert report.count("withdrawal_release") == 0
    finally:
        await asyncio.gather(quick.stop(), slow.stop())
        await proxy.close()


# --- 7. a paid download resumed after kill -9 of the client ----------------------------------


async def test_a_paid_download_resumed_after_kill_9_of_the_client_pays_exactly_once(
    network: Network, tmp_path: Path
) -> None:
    """`bitcache get` is killed (SIGKILL) while its payments have gone through but their
    answers have not reached it (the link to its node holds the replies): the worst
    moment, money gone and no preimage kept. Run again, it asks its node about the
    offers it had recorded before paying, and pays nothing twice: the gateway's node
    receives exactly price x chunks for the whole file."""
    price = 3_000
    cfg = config(network, tmp_path / "gw", default_price_msat=price, tenants=[TenantSettings()])
    payer_link = TcpProxy("127.0.0.1", network.node("payer").rest_port)
    await payer_link.start()
    gateway_node = network.node("gateway").client
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        source = tmp_path / "film.bin"
        source.write_bytes(os.urandom(9 * MIB + 5))  # 10 chunks of 1 MiB
        async with BitcacheClient(sandbox_client_config(network, gw, key)) as client:
            link = (await client.upload(source, progress=False)).to_url()
        file_id = link.split("/f/")[1].split("#")[0]
        downloader = sandbox_client_config(network, gw)
        assert downloader.lnd is not None
        lnd = downloader.lnd.model_copy(update={"rest_url": f"https://127.0.0.1:{payer_link.port}"})
        down_cfg = tmp_path / "down.json"
        down_cfg.write_text(downloader.model_copy(update={"lnd": lnd}).model_dump_json())
        out = tmp_path / "copy.bin"
        await network.wait_idle()
        received_before, _ = await gateway_node.channel_balance_msat()

        payer_link.stall(replies_only=True)
        get = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli", "get", link, "-o", str(out),
            "--config", str(down_cfg), "-q",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def paid() -> bool:
            return (await sold(cfg, file_id))[0] > 0

        await wait_until("a payment to go through unheard", paid, 60, every_s=0.1)
        get.kill()
        await get.wait()
        paid_unheard = await sold(cfg, file_id)
        assert not out.exists() and Path(f"{out}.part.json").exists()
        payer_link.resume()

        again = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli", "get", link, "-o", str(out),
            "--config", str(down_cfg), "-q",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, stderr.decode()
        assert out.read_bytes() == source.read_bytes()
        chunks, msat = await sold(cfg, file_id)
        assert chunks == 10 and msat == price * 10, (paid_unheard, chunks, msat)
        await network.wait_idle()
        received_after, _ = await gateway_node.channel_balance_msat()
        assert received_after - received_before == price * 10
        await books(cfg, network)
    await payer_link.close()


async def sold(cfg: GatewayConfig, file_id: str) -> tuple[int, int]:
    """(chunks, msat) of the file's invoices that LND settled, as the gateway booked them."""
    [(chunks, msat)] = await fetch_all(
        cfg,
        "SELECT COALESCE(SUM(last_chunk - first_chunk + 1), 0), COALESCE(SUM(amount_msat), 0)"
        " FROM invoices WHERE file_id = ? AND state = 'settled'",
        file_id,
    )
    return int(chunks), int(msat)


# --- the rest of the matrix: gateway and client killed at each stage ----------------------------


async def bitcache_cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """`bitcache …` as its own process (so it can be killed), output collected."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | env,
    )  # fmt: skip


async def db_count(cfg: GatewayConfig, sql: str, *params: object) -> int:
    """A count or sum in the gateway's database (a missing row or NULL fails the test)."""
    value = await fetch_value(cfg, sql, *params)
    assert value is not None, sql
    return int(value)


async def test_kill_9_of_the_gateway_with_payments_made_while_it_is_dead(
    network: Network, tmp_path: Path
) -> None:
    """Plan and chunk invoices issued, the gateway process killed, both paid while it is
    dead: after the restart both are booked once, and the chunk token still opens the
    chunk (without booking the sale again)."""
    gateway = GatewayProcess(config(network, tmp_path, port=0))
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            _, key = await create_account(session, gateway.url)
            invoices = await plan_and_chunk_invoices(session, gateway.url, key, network)
            file_id, macaroon = CHALLENGES[invoices[1][0]]
            await gateway.kill()
            payer = network.node("payer").client
            preimages = [
                (await payer.pay_invoice(bolt11, fee_limit_msat=1_000)).preimage
                for bolt11, _ in invoices
            ]
            await gateway.start()
            await wait_booked_once(gateway.config, invoices, timeout_s=15)
            token = {"Authorization": f"L402 {macaroon}:{preimages[1].hex()}"}
            async with session.get(
                f"{gateway.url}/v1/files/{file_id}/chunks/1", headers=token
            ) as resp:
                assert resp.status == 200
            assert await bookings(gateway.config, invoices[1][1].hex()) == 1
            async with session.get(f"{gateway.url}/v1/account", headers=bearer(key)) as resp:
                assert (await resp.json())["limit_bytes"] == PLAN.quota_bytes
            await books(gateway.config, network)
    finally:
        await gateway.stop()


async def finish(proc: asyncio.subprocess.Process, *rerun: str, env: dict[str, str]) -> str:
    """The output of `proc` if it succeeded, else of `bitcache *rerun` (a resume)."""
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        again = await bitcache_cli(*rerun, env=env)
        out, err = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, err.decode()
    return out.decode()


async def test_kill_9_of_the_gateway_during_an_upload_and_a_paid_download(
    network: Network, tmp_path: Path
) -> None:
    """`bitcache upload`, then `bitcache get`, each with the gateway process killed -9 and
    restarted in the middle (kubo is slowed so that there is a middle). The client retries
    or is run again and resumes: the quota counts the file once, and the gateway's node
    receives exactly price x chunks for the download."""
    assert network.kubo is not None
    kubo = TcpProxy("127.0.0.1", int(network.kubo.api_url.rsplit(":", 1)[1]))
    await kubo.start()
    price = 2_000
    cfg = config(
        network,
        tmp_path / "gw",
        port=0,
        default_price_msat=price,
        tenants=[TenantSettings()],
        kubo_api_url=f"http://127.0.0.1:{kubo.port}",
    )
    gateway = GatewayProcess(cfg)
    await gateway.start()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    gateway_node = network.node("gateway").client
    try:
        async with aiohttp.ClientSession() as session:
            _, key = await create_account(session, gateway.url)
        up_cfg, down_cfg = tmp_path / "up.json", tmp_path / "down.json"
        # Two chunks in flight, each slowed by the kubo proxy: the kill lands mid-upload.
        up = sandbox_client_config(network, gateway.url, key).model_copy(update={"concurrency": 2})
        up_cfg.write_text(up.model_dump_json())
        down_cfg.write_text(sandbox_client_config(network, gateway.url).model_dump_json())
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(10 * MIB + 3))  # 11 chunks

        kubo.slow(0.2)
        upload = ("upload", str(source), "--config", str(up_cfg), "-q")
        proc = await bitcache_cli(*upload, env=env)

        async def some_stored() -> bool:
            return await db_count(cfg, "SELECT COUNT(*) FROM chunks") >= 2

        await wait_until("part of the upload to be stored", some_stored, 60, every_s=0.05)
        await gateway.kill()
        assert await db_count(cfg, "SELECT COUNT(*) FROM chunks") < 11  # killed mid-upload
        await gateway.start()
        kubo.slow(0)
        link = (await finish(proc, *upload, env=env)).strip()
        assert await db_count(cfg, "SELECT COUNT(*) FROM files WHERE state = 'complete'") == 1
        assert await db_count(cfg, "SELECT COUNT(*) FROM chunks") == 11
        used = await db_count(cfg, "SELECT used_bytes FROM accounts WHERE used_bytes > 0")
        assert used == await db_count(cfg, "SELECT SUM(stored_bytes) FROM files")  # counted once

        file_id = link.split("/f/")[1].split("#")[0]
        await network.wait_idle()
        received_before, _ = await gateway_node.channel_balance_msat()
        kubo.slow(0.2)
        out = tmp_path / "copy.bin"
        get = ("get", link, "-o", str(out), "--config", str(down_cfg), "-q")
        proc = await bitcache_cli(*get, env=env)

        async def some_sold() -> bool:
            return (await sold(cfg, file_id))[0] > 0

        await wait_until("part of the download to be paid", some_sold, 60, every_s=0.05)
        await gateway.kill()
        await gateway.start()
        kubo.slow(0)
        await finish(proc, *get, env=env)
        assert out.read_bytes() == source.read_bytes()
        assert await sold(cfg, file_id) == (11, 11 * price)
        await network.wait_idle()
        received_after, _ = await gateway_node.channel_balance_msat()
        assert received_after - received_before == 11 * price
        await books(cfg, network)
    finally:
        await gateway.stop()
        await kubo.close()


async def test_kill_9_of_the_client_during_an_upload_and_a_plan_purchase(
    network: Network, tmp_path: Path
) -> None:
    """`bitcache upload` killed mid-upload, run again: it resumes and the quota counts the
    file once. `bitcache account buy` killed after its payment went through unheard: the
    gateway credits the plan anyway (from its own node), once."""
    assert network.kubo is not None
    kubo = TcpProxy("127.0.0.1", int(network.kubo.api_url.rsplit(":", 1)[1]))
    await kubo.start()
    payer_link = TcpProxy("127.0.0.1", network.node("payer").rest_port)
    await payer_link.start()
    cfg = config(
        network,
        tmp_path / "gw",
        tenants=[TenantSettings(plans=[PLAN])],
        kubo_api_url=f"http://127.0.0.1:{kubo.port}",
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    async with aiohttp.ClientSession() as session, serve(cfg) as gw:
        _, key = await create_account(session, gw)
        client = sandbox_client_config(network, gw, key)
        assert client.lnd is not None
        lnd = client.lnd.model_copy(update={"rest_url": f"https://127.0.0.1:{payer_link.port}"})
        up_cfg = tmp_path / "up.json"
        # Two chunks in flight, each slowed by the kubo proxy: the kill lands mid-upload
        # (with the default 16 in flight, all 9 chunks are stored at once).
        up = client.model_copy(update={"lnd": lnd, "concurrency": 2})
        up_cfg.write_text(up.model_dump_json())
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(8 * MIB + 1))  # 9 chunks

        kubo.slow(0.2)
        upload = ("upload", str(source), "--config", str(up_cfg), "-q")
        proc = await bitcache_cli(*upload, env=env)

        async def some_stored() -> bool:
            return await db_count(cfg, "SELECT COUNT(*) FROM chunks") >= 2

        await wait_until("part of the upload to be stored", some_stored, 60, every_s=0.05)
        proc.kill()
        await proc.wait()
        assert await db_count(cfg, "SELECT COUNT(*) FROM chunks") < 9
        kubo.slow(0)
        again = await bitcache_cli(*upload, env=env)
        _, err = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, err.decode()
        assert await db_count(cfg, "SELECT COUNT(*) FROM files") == 1  # the same file, resumed
        assert await db_count(cfg, "SELECT COUNT(*) FROM chunks") == 9
        used = await db_count(cfg, "SELECT used_bytes FROM accounts WHERE used_bytes > 0")
        assert used == await db_count(cfg, "SELECT SUM(stored_bytes) FROM files")

        payer_link.stall(replies_only=True)
        buy = await bitcache_cli("account", "--config", str(up_cfg), "buy", PLAN.id, env=env)

        async def plan_paid() -> bool:
            return (
                await db_count(cfg, "SELECT COUNT(*) FROM plan_invoices WHERE state = 'settled'")
                > 0
            )

        await wait_until("the plan to be paid (the client never hears)", plan_paid, 60, 0.05)
        buy.kill()
        await buy.wait()
        payer_link.resume()
        async with session.get(f"{gw}/v1/account", headers=bearer(key)) as resp:
            usage = await resp.json()
        assert [(p["plan_id"], p["active"]) for p in usage["plans"]] == [(PLAN.id, True)]
        assert await db_count(cfg, "SELECT COUNT(*) FROM subscriptions") == 1
        report = await books(cfg, network)
        assert report.count("plan_purchase") == 1
    await kubo.close()
    await payer_link.close()
