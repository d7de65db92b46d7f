"""Gateway processes as production runs them (`python -m gateway --config …`), on regtest.

- Two processes on one SQLite file: exactly one follows LND's invoice stream (it holds
  the lease); after kill -9 of that one, the other takes the stream over within a few
  seconds, and an invoice paid while nobody followed is booked exactly once.
- SIGTERM: new connections are refused at once, a slow download in flight still gets
  every byte, and the process exits 0, having handed its stream lease on. Given no time
  to drain, the same download is cut short: the test can tell the difference.
- Three processes on one PostgreSQL database (tests/gateways.py, on the session's server):
  a token minted by one is honoured by the others; 100 concurrent withdrawals of one
  balance spread over the three pay out once; kill -9 of one mid-download and the client
  finishes through the proxy on the other two, with every chunk paid exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.api import BitcacheClient
from gateway.config import GatewayConfig
from gateway.tenants.nodes import connection_key
from regtest import postgres
from regtest.network import Network, wait_until
from regtest.process import ManagedProcess
from sandbox.run import sandbox_client_config
from storage.crypto import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from tests.conftest import gateway_config
from tests.gateways import Replicas, replicas
from tests.ledger_check import check_books
from tests.sql import fetch_all
from tests.support import bearer, create_account, random_bytes, upload_raw

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LEASE_S = 5.0  # renewed every 5/3 s; a dead holder's lease is taken within 5 + 5/3 s
PRICE_MSAT = 5_000
TAIL = 64 * 1024


class GatewayProcess:
    """`python -m gateway --config <file>` with this checkout's code."""

    def __init__(self, config: GatewayConfig, name: str) -> None:
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = config.data_dir / f"{name}.json"
        data = config.model_dump(mode="json", exclude_none=True)
        self.config_path.write_text(json.dumps(data, indent=2))
        self.process = ManagedProcess(
            name,
            [sys.executable, "-m", "gateway", "--config", str(self.config_path)],
            config.data_dir / f"{name}.log",
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def start(self) -> None:
        await self.process.start()

        async def healthy() -> bool:
            if not self.process.running():
                raise AssertionError(f"gateway exited:\n{self.process.log_tail()}")
            async with aiohttp.ClientSession() as s, s.get(f"{self.url}/v1/health") as r:
                return r.status == 200

        await wait_until(f"{self.url} to answer", healthy, 60, every_s=0.1)

    async def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.process.proc is not None
        await self.process.proc.wait()

    async def exit_code(self, timeout_s: float) -> int:
        assert self.process.proc is not None
        return await asyncio.wait_for(self.process.proc.wait(), timeout_s)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        return {
            (m.name, tuple(sorted(m.labels.items()))): m.value
            for family in text_string_to_metric_families(text)
            for m in family.samples
        }

    async def following(self, node: str) -> float | None:
        """1 or 0 once this process has checked the node's lease; None before."""
        return (await self.metrics()).get(("bitcache_invoice_stream_following", (("node", node),)))


@pytest.fixture
async def processes() -> AsyncIterator[list[GatewayProcess]]:
    """Every gateway process a test starts, stopped at its end whatever happens."""
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for gateway in started:
            await gateway.process.stop(grace_s=5)


async def read_db(config: GatewayConfig, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Reads the gateways' database (SQLite or PostgreSQL) from outside, as an operator
    would."""
    return await fetch_all(config, sql, *params)


async def test_one_process_follows_the_stream_and_another_takes_over_after_kill_9(
    network: Network, tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    shared = tmp_path / "shared"  # one database and one token secret for both processes
    settings: dict[str, Any] = {"stream_lease_s": LEASE_S, "metrics_public": True}
    a = GatewayProcess(gateway_config(network, shared, **settings), "a")
    b = GatewayProcess(gateway_config(network, shared, **settings), "b")
    node = connection_key(a.config.lnd)  # what the lease and its metric are keyed by
    db = a.config
    processes += [a, b]
    await a.start()  # first alone: it creates the database
    await wait_until("a to follow the stream", lambda: _is(a.following(node), 1), 30)
    await b.start()
    await wait_until("b to find the lease taken", lambda: _is(b.following(node), 0), 30)
    [(holder,)] = await read_db(db, "SELECT holder FROM stream_leases WHERE node = ?", node)
    assert f":{a.pid}:" in holder

    async with aiohttp.ClientSession() as session:
        # An invoice from b, the process not following the stream.
        up = await upload_raw(
            session, b.url, random_bytes(2 * MIN_CHUNK_SIZE), PRICE_MSAT, MIN_CHUNK_SIZE
        )
        async with session.get(f"{b.url}/v1/files/{up.file_id}/chunks/0?count=2") as resp:
            assert resp.status == 402
            challenge = await resp.json()
        killed_at = time.monotonic()
        await a.kill()
        # Paid while nobody follows the stream, and never presented to a gateway: only
        # the stream (or the reconcile of its new follower) can book it.
        payer = network.node("payer").client
        payment = await payer.pay_invoice(challenge["invoice"], fee_limit_msat=10_000)
        assert await b.following(node) == 0, "paid too slowly: b had already taken over"
        await wait_until("b to take the stream over", lambda: _is(b.following(node), 1), 30)
        takeover_s = time.monotonic() - killed_at
        reference = payment.payment_hash.hex()

        async def booked() -> bool:
            return bool(
                await read_db(
                    db, "SELECT 1 FROM ledger_transactions WHERE reference = ?", reference
                )
            )

        await wait_until("the payment to be booked", booked, 30)
        async with session.get(f"{b.url}/v1/account", headers=bearer(up.api_key)) as resp:
            usage = await resp.json()

    print(f"\nstream takeover after kill -9: {takeover_s:.1f} s (lease {LEASE_S:g} s)")
    assert takeover_s < LEASE_S + LEASE_S / 3 + 3  # expiry + one renewal period + slack
    [(holder,)] = await read_db(db, "SELECT holder FROM stream_leases WHERE node = ?", node)
    assert f":{b.pid}:" in holder
    # Booked exactly once: one ledger transaction, one sale of two chunks, earnings once.
    assert await read_db(
        db,
        "SELECT kind, COUNT(*) FROM ledger_transactions WHERE reference = ? GROUP BY kind",
        reference,
    ) == [("chunk_sale", 1)]
    assert await read_db(
        db, "SELECT state FROM invoices WHERE payment_hash = ?", payment.payment_hash
    ) == [("settled",)]
    fee = challenge["amount_msat"] * 1_000 // 10_000  # the default tenant's 10 %
    assert usage["totals"]["chunks_sold"] == 2
    assert usage["balance_msat"] == challenge["amount_msat"] - fee
    # b's metrics saw it: the settlement it booked, and its calls to real LND and kubo.
    samples = await b.metrics()
    tenant = (("kind", "chunks"), ("tenant", "default"))
    assert samples[("bitcache_invoices_settled_total", tenant)] == 1
    assert samples[("bitcache_earned_msat_total", tenant)] == challenge["amount_msat"]
    assert samples[("bitcache_invoices_created_total", tenant)] == 1
    lnd = (("call", "POST /v1/invoices"), ("node", a.config.lnd.rest_url))
    assert samples[("bitcache_lnd_call_duration_seconds_count", lnd)] == 1
    assert samples[("bitcache_ipfs_call_duration_seconds_count", (("call", "add"),))] == 2
    assert samples[("bitcache_bytes_stored_total", (("tenant", "default"),))] == sum(
        map(len, up.sealed)
    )


async def _is(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _refused(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


@pytest.mark.parametrize(
    ("shutdown_timeout_s", "drained"),
    [(30.0, True), (0.1, False)],
    ids=["drain", "no-drain"],
)
async def test_sigterm_lets_a_slow_download_finish(
    network: Network,
    tmp_path: Path,
    processes: list[GatewayProcess],
    shutdown_timeout_s: float,
    drained: bool,
) -> None:
    config = gateway_config(network, tmp_path / "gw", shutdown_timeout_s=shutdown_timeout_s)
    gw = GatewayProcess(config, "gw")
    processes.append(gw)
    await gw.start()
    # One free chunk of the largest size: far more than the kernel's socket buffers hold
    # (4 MiB at most here), so the gateway is still sending it while the client waits.
    async with aiohttp.ClientSession() as session:
        up = await upload_raw(
            session, gw.url, random_bytes(MAX_CHUNK_SIZE), 0, chunk_size=MAX_CHUNK_SIZE
        )
    expected = up.sealed[0]
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
        sock.setblocking(False)
        await loop.sock_connect(sock, (config.host, config.port))
        request = (
            f"GET /v1/files/{up.file_id}/chunks/0 HTTP/1.1\r\n"
            f"Host: {config.host}:{config.port}\r\nConnection: close\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += await loop.sock_recv(sock, 4096)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"Content-Length: {len(expected)}".encode() in head

        signalled_at = time.monotonic()
        os.kill(gw.pid, signal.SIGTERM)
        await wait_until(
            "new connections to be refused",
            lambda: _refused(config.host, config.port),
            10,
            every_s=0.05,
        )
        if drained:
            assert gw.process.running(), "exited before the download in flight was sent"

        async def receive(until: int) -> None:
            nonlocal body
            while len(body) < until:
                try:
                    part = await loop.sock_recv(sock, 1 << 16)
                except ConnectionResetError:
                    return
                if not part:
                    return
                body += part

        # All but the last 64 KiB, the gateway still running all the while: it waits
        # for a download in flight (this one takes seconds through its small window).
        await receive(len(expected) - TAIL)
        if drained:
            assert gw.process.running(), "exited before the download in flight was sent"
        await receive(len(expected) + 1)
    code = await gw.exit_code(timeout_s=shutdown_timeout_s + 15)
    stopped_s = time.monotonic() - signalled_at
    print(f"\nSIGTERM to exit ({shutdown_timeout_s:g} s allowed): {stopped_s:.1f} s")
    assert code == 0
    if drained:
        assert len(body) == len(expected), (len(body), len(expected))
        assert body == expected  # every byte, and the right ones
    else:
        assert len(body) < len(expected)  # cut: without the drain this download fails
    # A clean stop hands the invoice-stream lease on at once.
    assert await read_db(config, "SELECT COUNT(*) FROM stream_leases") == [(0,)]


# --- three gateway processes on one PostgreSQL database, behind a round-robin proxy ------


@pytest.fixture
async def three(network: Network, postgres_server: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    """Three gateway processes with one config (a fresh PostgreSQL database, one token
    secret) and the proxy in front of them."""
    url = await postgres.create_database(postgres_server, f"procs_{secrets.token_hex(6)}")
    config = gateway_config(
        network, tmp_path / "shared", database_url=url, maintenance_interval_s=1
    )
    async with replicas(config, 3) as group:
        yield group


async def test_a_download_paid_through_one_process_is_served_by_the_others(
    network: Network, three: Replicas
) -> None:
    a, b, c = three.processes
    async with aiohttp.ClientSession() as session:
        up = await upload_raw(
            session, a.url, random_bytes(4 * MIN_CHUNK_SIZE), PRICE_MSAT, MIN_CHUNK_SIZE
        )
        async with session.get(f"{a.url}/v1/files/{up.file_id}/chunks/0?count=4") as resp:
            assert resp.status == 402
            challenge = await resp.json()
        payment = await network.node("payer").client.pay_invoice(
            challenge["invoice"], fee_limit_msat=10_000
        )
        token = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
        # Minted by a, honoured by b and c, whichever of them books the payment first.
        for index, gateway in [(0, b), (1, c), (2, b), (3, c)]:
            chunk = f"{gateway.url}/v1/files/{up.file_id}/chunks/{index}"
            async with session.get(chunk, headers=token) as resp:
                assert resp.status == 200, (gateway.url, await resp.text())
                assert await resp.read() == up.sealed[index]
        # Not a free-for-all: without the token b still asks for payment.
        async with session.get(f"{b.url}/v1/files/{up.file_id}/chunks/0") as resp:
            assert resp.status == 402
    config = a.config
    assert await read_db(config, "SELECT COUNT(*) FROM invoices") == [(2,)]  # a's, b's 402
    books = await check_books(config, network.node("gateway").client)
    assert books.count("chunk_sale") == 1
    assert books.received_msat == 4 * PRICE_MSAT


async def test_a_hundred_concurrent_withdrawals_over_three_processes_pay_once(
    network: Network, three: Replicas
) -> None:
    payer = network.node("payer").client
    gateways = [p.url for p in three.processes]
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, gateways[0])
        up = await upload_raw(
            session,
            gateways[0],
            random_bytes(2 * MIN_CHUNK_SIZE),
            10_000,
            MIN_CHUNK_SIZE,
            api_key=key,
        )
        async with session.get(f"{gateways[1]}/v1/files/{up.file_id}/chunks/0?count=2") as r:
            challenge = await r.json()
        payment = await payer.pay_invoice(challenge["invoice"], fee_limit_msat=10_000)
        token = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
        async with session.get(f"{gateways[2]}/v1/files/{up.file_id}/chunks/1", headers=token) as r:
            assert r.status == 200
            await r.read()

        async def balance() -> int:
            async with session.get(f"{gateways[0]}/v1/account", headers=bearer(key)) as r:
                return int((await r.json())["balance_msat"])

        async def earned() -> bool:
            return await balance() > 0

        await wait_until("the sale to be credited", earned, 15, every_s=0.1)
        amount = await balance() - 1_000  # the routing-fee reserve is held on top
        invoices = [await payer.create_invoice(amount, f"procs race {i}") for i in range(100)]

        async def attempt(i: int) -> int:
            headers = bearer(key) | {"Idempotency-Key": f"procs-{i:04d}-{secrets.token_hex(4)}"}
            async with session.post(
                f"{gateways[i % 3]}/v1/account/withdrawals",
                json={"invoice": invoices[i].bolt11},
                headers=headers,
            ) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(attempt(i) for i in range(100)))
        assert statuses.count(200) == 1 and statuses.count(409) == 99, sorted(statuses)
        assert await balance() == 1_000  # only the unspent reserve is left
    states = [(await payer.lookup_invoice(inv.payment_hash)).state for inv in invoices]
    assert states.count("settled") == 1
    books = await check_books(three.processes[0].config, network.node("gateway").client)
    assert books.count("withdrawal_settle") == 1
    assert books.paid_out_msat == books.booked_out_msat >= amount  # + LND's fee


async def test_kill_9_of_a_process_mid_download_the_client_finishes_through_the_others(
    network: Network, three: Replicas, tmp_path: Path
) -> None:
    proxy = three.proxy
    victim = three.processes[1]
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, proxy.url)
    source = tmp_path / "big.bin"
    source.write_bytes(random_bytes(24 * (1 << 20) + 123))
    async with BitcacheClient(sandbox_client_config(network, proxy.url, key)) as client:
        link = await client.upload(source, progress=False)
    before = proxy.served[victim.url]
    downloader = sandbox_client_config(network, proxy.url)
    async with BitcacheClient(downloader) as client:
        download = asyncio.create_task(
            client.download(link.to_url(), tmp_path / "copy.bin", progress=False)
        )

        async def victim_is_serving() -> bool:
            if download.done():
                raise AssertionError("the download ended before the kill")
            return proxy.served[victim.url] - before >= 3

        await wait_until("the victim to serve a few requests", victim_is_serving, 60, every_s=0.01)
        await victim.kill()
        killed_at = proxy.served.copy()
        result = await asyncio.wait_for(download, 120)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert proxy.served[victim.url] == killed_at[victim.url]  # nothing more from the dead
    assert sum(proxy.served.values()) > sum(killed_at.values())  # the others carried on
    # No chunk paid twice: the settled invoices cover each chunk exactly once.
    assert result.chunks == result.chunks_bought == 25
    config = victim.config
    settled = await read_db(
        config, "SELECT first_chunk, last_chunk FROM invoices WHERE state = 'settled'"
    )
    covered = sorted(i for first, last in settled for i in range(first, last + 1))
    assert covered == list(range(25))
    books = await check_books(config, network.node("gateway").client)
    assert books.count("chunk_sale") == len(settled)
    assert result.paid_msat == books.received_msat
