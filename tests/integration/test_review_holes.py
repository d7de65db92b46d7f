"""Issue 9's review holes, each reproduced on the real regtest network (LND, kubo).

One section per numbered item of the issue; each test failed before its fix.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.app import create_app
from gateway.billing.pricing import MAX_INVOICE_MSAT
from gateway.billing.quota import Plan
from gateway.config import Brand, GatewayConfig, TenantSettings
from gateway.http.handlers.pages import STATIC_DIR
from gateway.persistence.database import Database
from gateway.server import serve
from gateway.services import SERVICES, Services
from lightning.errors import LightningError
from lightning.lnd import LndRestClient
from regtest.cluster import json_values
from regtest.network import LndNode, Network, wait_until
from storage.crypto import FileEncryptor, b64url_encode, derive_keys, new_file_id, new_file_key
from storage.manifest import Manifest, seal_manifest
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.support import (
    TcpProxy,
    bearer,
    create_account,
    proxied_storage,
    random_bytes,
    upload_raw,
)

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@asynccontextmanager
async def running(config: GatewayConfig) -> AsyncIterator[tuple[str, Services]]:
    """A gateway like gateway.server.serve, also handing the test its services."""
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield f"http://{config.host}:{config.port}", app[SERVICES]
    finally:
        await runner.cleanup()


# --- kubo, asked directly -------------------------------------------------------------


def kubo_url(network: Network) -> str:
    assert network.kubo is not None
    return network.kubo.api_url


# On the cluster backend (make test-scale) the session gateway stores in the cluster: what
# it holds pinned is the cluster's pinset, and data is lost only when every peer lost it.


async def pinned(session: aiohttp.ClientSession, network: Network) -> set[str]:
    """What the gateway's store holds pinned: kubo's pins, or the cluster's pinset as
    peer 0 (the REST API the gateway asks first, so without propagation delay) sees it."""
    if network.cluster is not None:
        async with session.get(f"{network.cluster.peers[0].rest_url}/allocations") as resp:
            assert resp.status == 200, await resp.text()
            return {str(pin["cid"]) for pin in json_values(await resp.text())}
    return await kubo_pinned(session, kubo_url(network))


async def kubo_pinned(session: aiohttp.ClientSession, url: str) -> set[str]:
    async with session.post(f"{url}/api/v0/pin/ls", params={"type": "recursive"}) as resp:
        assert resp.status == 200, await resp.text()
        return set((await resp.json())["Keys"])


def kubo_urls(network: Network) -> list[str]:
    """Every kubo that holds the gateway's data: the one, or each cluster peer's."""
    if network.cluster is not None:
        return [peer.kubo.api_url for peer in network.cluster.peers]
    return [kubo_url(network)]


async def repo_gc(session: aiohttp.ClientSession, network: Network) -> None:
    for url in kubo_urls(network):
        async with session.post(f"{url}/api/v0/repo/gc") as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()


async def cid_of(session: aiohttp.ClientSession, network: Network, data: bytes) -> str:
    """The CID the gateway's add gives these bytes, computed without storing them."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename="chunk")
    async with session.post(
        f"{kubo_url(network)}/api/v0/add",
        params={"cid-version": "1", "pin": "false", "only-hash": "true"},
        data=form,
    ) as resp:
        return str((await resp.json())["Hash"])


async def unpin(session: aiohttp.ClientSession, network: Network, cid: str) -> None:
    """Unpins ``cid`` behind the gateway's back, from every kubo that holds it."""
    if network.cluster is None:
        async with session.post(f"{kubo_url(network)}/api/v0/pin/rm", params={"arg": cid}) as r:
            assert r.status == 200, await r.text()
        return
    async with session.delete(f"{network.cluster.peers[0].rest_url}/pins/{cid}") as resp:
        assert resp.status == 200, await resp.text()

    async def unpinned() -> bool:
        for url in kubo_urls(network):
            if cid in await kubo_pinned(session, url):
                return False
        return True

    await wait_until("every peer's kubo to unpin it", unpinned, 30, every_s=0.2)


# --- helpers ---------------------------------------------------------------------------


async def create_file(
    session: aiohttp.ClientSession, gateway: str, api_key: str, size: int, price_msat: int = 0
) -> tuple[str, FileEncryptor]:
    """Creates a file record (no chunks yet); returns its id and encryptor."""
    key, fid = new_file_key(), new_file_id()
    enc = FileEncryptor(key, fid, size)
    manifest = seal_manifest(
        derive_keys(key, fid),
        fid,
        Manifest(name="f.bin", size=size, chunk_size=enc.header.chunk_size),
    )
    body = {
        "header": enc.header.to_json_dict(),
        "manifest": b64url_encode(manifest),
        "price_msat": price_msat,
    }
    async with session.post(f"{gateway}/v1/files", json=body, headers=bearer(api_key)) as resp:
        assert resp.status == 201, await resp.text()
        state = await resp.json()
    return str(state["file_id"]), enc


async def put(
    session: aiohttp.ClientSession, gateway: str, api_key: str, file_id: str, i: int, data: bytes
) -> tuple[int, dict[str, object]]:
    async with session.put(
        f"{gateway}/v1/files/{file_id}/chunks/{i}", data=data, headers=bearer(api_key)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def assert_problem(status: int, body: dict[str, object], expected: int) -> None:
    assert status == expected, body
    assert {"type", "title", "detail"} <= body.keys(), body


def _awaiting(awaitable: object, qualname: str) -> bool:
    """`awaitable`, or a coroutine it is waiting on, is a call of `qualname`."""
    while awaitable is not None:
        code = getattr(awaitable, "cr_code", None)
        if code is not None and code.co_qualname == qualname:
            return True
        awaitable = getattr(awaitable, "cr_await", None)
    return False


def suspended_in(qualname: str, tasks: int = 1) -> bool:
    """At least `tasks` tasks of this event loop (the in-process gateway's included) are
    inside a call of `qualname`: how a test knows requests reached a given step, without
    sleeping."""
    return sum(_awaiting(t.get_coro(), qualname) for t in asyncio.all_tasks()) >= tasks


async def reaches(qualname: str, tasks: int = 1) -> None:
    async def there() -> bool:
        return suspended_in(qualname, tasks)

    await wait_until(f"{tasks} request(s) to reach {qualname}", there, 10, every_s=0.01)


async def waits_for_the_row(db: Database, statement: str) -> None:
    """On PostgreSQL, a request inside a store call may not have sent its statement yet;
    this waits until ``statement`` (its start, as PostgreSQL shows it) waits on a row
    lock, so the order in which the waiters get the row is the order of the calls. On
    SQLite, reaching the call is enough: it waits for the write lock at BEGIN."""
    if db.dialect == "sqlite":
        return

    async def waiting() -> bool:
        row = await db.fetch_one(
            "SELECT COUNT(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND starts_with(query, ?)",
            (statement,),
        )
        return row is not None and int(row[0]) > 0

    await wait_until(f"{statement!r} to wait for its row", waiting, 10, every_s=0.01)


async def invoice_stream_open(lnd_url: str) -> bool:
    """The gateway's invoice subscription to `lnd_url` is sent and waiting for (or reading)
    LND's answer: from now on the gateway sends LND nothing unless a request makes it."""
    for obj in gc.get_objects():
        # _stream_once holds the request (_stream around it only reports it to metrics).
        if inspect.isasyncgen(obj) and obj.ag_code.co_qualname == "LndRestClient._stream_once":
            local = obj.ag_frame.f_locals if obj.ag_frame is not None else {}
            client = local.get("self")
            if (
                local.get("path") == "/v1/invoices/subscribe"
                and isinstance(client, LndRestClient)
                and client.url == lnd_url
                # LND sends the headers with the first invoice, so usually still here:
                and ("resp" in local or _awaiting(obj.ag_await, "ClientResponse.start"))
            ):
                return True
    return False


@asynccontextmanager
async def lnd_behind_proxy(
    network: Network, tmp_path: Path, **overrides: object
) -> AsyncIterator[tuple[str, Services, TcpProxy]]:
    """A gateway whose LND is reached through a proxy that counts what the gateway says
    to LND; yields once the gateway's own background calls to LND are done."""
    proxy = TcpProxy("127.0.0.1", network.node("gateway").rest_port)
    await proxy.start()
    base = gateway_config(network, tmp_path, **overrides)
    lnd_url = f"https://127.0.0.1:{proxy.port}"
    config = base.model_copy(update={"lnd": base.lnd.model_copy(update={"rest_url": lnd_url})})
    try:
        async with running(config) as (url, services):

            async def stream_open() -> bool:
                return await invoice_stream_open(lnd_url)

            await wait_until("the invoice stream to open", stream_open, 30, every_s=0.05)
            yield url, services, proxy
    finally:
        await proxy.cut()


# --- 1. pins are reference-counted per CID ------------------------------------------


async def test_1_no_account_can_unpin_another_accounts_chunks(
    session: aiohttp.ClientSession, network: Network, gateway_url: str
) -> None:
    # The victim uploads 2 MiB + 1 B (three chunks) at the default price.
    victim = await upload_raw(session, gateway_url, random_bytes(2 * MIB + 1))
    victim_chunk = f"{gateway_url}/v1/files/{victim.file_id}/chunks/0"
    # Another account fetches the victim's chunk 0, paying for it like any buyer.
    async with session.get(victim_chunk) as resp:
        assert resp.status == 402
        challenge = await resp.json()
    payment = await network.node("payer").client.pay_invoice(challenge["invoice"], 1_000)
    token = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
    async with session.get(victim_chunk, headers=token) as resp:
        assert resp.status == 200
        stolen = await resp.read()
        victim_cid = resp.headers["ETag"].strip('"')
    assert stolen == victim.sealed[0]
    assert victim_cid in await pinned(session, network)

    # It uploads its own 2 MiB file, then PUTs the victim's bytes as its chunk 0: 409.
    attacker = await upload_raw(session, gateway_url, random_bytes(2 * MIB))
    status, body = await put(session, gateway_url, attacker.api_key, attacker.file_id, 0, stolen)
    assert_problem(status, body, 409)
    assert victim_cid in await pinned(session, network), "a rejected PUT unpinned the victim"

    # Positive control: rejected bytes that no chunk uses are unpinned.
    junk = random_bytes(len(stolen))
    junk_cid = await cid_of(session, network, junk)
    status, body = await put(session, gateway_url, attacker.api_key, attacker.file_id, 0, junk)
    assert_problem(status, body, 409)
    assert junk_cid not in await pinned(session, network)

    # A file of its own that reuses the victim's chunk, then deleted: the victim's CID
    # stays; the CID only the deleted file used goes.
    reuse_id, enc = await create_file(session, gateway_url, attacker.api_key, 2 * MIB)
    status, _ = await put(session, gateway_url, attacker.api_key, reuse_id, 0, stolen)
    assert status == 201
    own = enc.seal(1, random_bytes(MIB))
    own_cid = await cid_of(session, network, own)
    status, _ = await put(session, gateway_url, attacker.api_key, reuse_id, 1, own)
    assert status == 201
    assert own_cid in await pinned(session, network)
    async with session.delete(
        f"{gateway_url}/v1/files/{reuse_id}", headers=bearer(attacker.api_key)
    ) as resp:
        assert resp.status == 200
    now_pinned = await pinned(session, network)
    assert victim_cid in now_pinned, "deleting a file unpinned a CID another file uses"
    assert own_cid not in now_pinned, "a CID only the deleted file used is still pinned"

    # The victim's data survives garbage collection and still downloads.
    await repo_gc(session, network)
    for index, sealed in enumerate(victim.sealed):
        async with session.get(
            f"{gateway_url}/v1/files/{victim.file_id}/chunks/{index}",
            headers=bearer(victim.api_key),
        ) as resp:
            assert resp.status == 200
            assert await resp.read() == sealed


async def test_1_a_missing_block_is_a_502_problem_not_a_500(
    session: aiohttp.ClientSession, network: Network, gateway_url: str
) -> None:
    up = await upload_raw(session, gateway_url, random_bytes(MIB + 10), price_msat=0)
    url = f"{gateway_url}/v1/files/{up.file_id}/chunks/0"
    async with session.get(url) as resp:
        assert resp.status == 200
        cid = resp.headers["ETag"].strip('"')
    # Lost behind the gateway's back (an operator's mistake, a disk fault).
    await unpin(session, network, cid)
    await repo_gc(session, network)
    async with session.get(url) as resp:
        body = await resp.json(content_type=None)
        assert resp.status in (502, 503), body
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert body["type"].endswith(("storage-missing", "dependency-unavailable")), body


# --- 7. PUT or complete racing a DELETE ----------------------------------------------


async def test_7_put_racing_delete_is_410_and_leaves_nothing_pinned(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    async with running(gateway_config(network, tmp_path)) as (url, services):
        _, key = await create_account(session, url)
        file_id, enc = await create_file(session, url, key, 2 * MIB)
        chunk = enc.seal(0, random_bytes(MIB))
        cid = await cid_of(session, network, chunk)
        # Hold the file's row (SQLite: the database's write lock) so that the DELETE
        # commits while the PUT has already loaded the file (as 'uploading') and added its
        # bytes to kubo.
        async with services.db.transaction() as conn:
            await conn.execute("SELECT id FROM files WHERE id = ? FOR UPDATE", (file_id,))
            deleting = asyncio.ensure_future(
                session.delete(f"{url}/v1/files/{file_id}", headers=bearer(key))
            )
            await reaches("FileStore.delete")
            await waits_for_the_row(services.db, "UPDATE files SET state = 'deleted'")
            putting = asyncio.ensure_future(put(session, url, key, file_id, 0, chunk))
            await reaches("FileStore.put_chunk")
            await waits_for_the_row(services.db, "SELECT state FROM files WHERE id = $1")
        deleted = await deleting
        assert deleted.status == 200
        deleted.release()
        status, body = await putting
        assert_problem(status, body, 410)
        assert cid not in await pinned(session, network)
        # Later requests see the deletion too.
        status, body = await put(session, url, key, file_id, 0, chunk)
        assert_problem(status, body, 410)


async def test_7_complete_racing_delete_is_410(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    async with running(gateway_config(network, tmp_path)) as (url, services):
        _, key = await create_account(session, url)
        file_id, enc = await create_file(session, url, key, 100)
        status, _ = await put(session, url, key, file_id, 0, enc.seal(0, random_bytes(100)))
        assert status == 201
        async with services.db.transaction() as conn:  # as above: the DELETE goes first
            await conn.execute("SELECT id FROM files WHERE id = ? FOR UPDATE", (file_id,))
            deleting = asyncio.ensure_future(
                session.delete(f"{url}/v1/files/{file_id}", headers=bearer(key))
            )
            await reaches("FileStore.delete")
            await waits_for_the_row(services.db, "UPDATE files SET state = 'deleted'")
            completing = asyncio.ensure_future(
                session.post(f"{url}/v1/files/{file_id}/complete", headers=bearer(key))
            )
            await reaches("FileStore.mark_complete")
            await waits_for_the_row(services.db, "SELECT state FROM files WHERE id = $1")
        deleted = await deleting
        assert deleted.status == 200
        deleted.release()
        completed = await completing
        body = await completed.json(content_type=None)
        completed.release()
        assert_problem(completed.status, body, 410)


# --- 3. BOLT 11 checked before any LND call; URL values quoted ----------------------

EVIL_INVOICE = "%2e%2e/%2e%2e/v1/getinfo?a=bbbbbbbbbbbbbb"
# BOLT 11 example ("a cup of coffee", 2500u): valid, but a mainnet invoice.
MAINNET_COFFEE = (
    "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7en"
    "xv4jsxqzpuaztrnwngzn3kdzw5hydlzf03qdgm2hdq27cqv3agm2awhz5se903vruatfhq77w3ls4evs3ch9zw97j2"
    "5emudupq63nyw24cg27h2rspfj9srp"
)


async def withdraw(
    session: aiohttp.ClientSession, gateway: str, api_key: str, invoice: str, key: str
) -> tuple[int, dict[str, object]]:
    async with session.post(
        f"{gateway}/v1/account/withdrawals",
        json={"invoice": invoice},
        headers=bearer(api_key) | {"Idempotency-Key": key},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_3_a_bad_withdrawal_invoice_is_422_before_any_lnd_call(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    async with lnd_behind_proxy(network, tmp_path) as (url, _, lnd):
        _, key = await create_account(session, url)
        said = lnd.sent
        status, body = await withdraw(session, url, key, EVIL_INVOICE, "evil-0000")
        assert_problem(status, body, 422)
        assert str(body["type"]).endswith("bad-invoice")
        # 64 in parallel: all refused, and not one byte reached LND.
        results = await asyncio.gather(
            *(withdraw(session, url, key, EVIL_INVOICE, f"evil-{i:04d}") for i in range(64))
        )
        assert [status for status, _ in results] == [422] * 64
        assert lnd.sent == said, "the gateway called LND with an invoice it had not checked"
        # Nothing was hurt: LND still answers through the gateway.
        async with session.get(f"{url}/v1/health") as resp:
            assert resp.status == 200

        # A well-formed invoice of another network, and one without an amount: 422 too.
        status, body = await withdraw(session, url, key, MAINNET_COFFEE, "mainnet-0001")
        assert_problem(status, body, 422)
        assert "another network" in str(body["detail"])
        amountless = await network.node("payer").client.create_invoice(0, "any amount")
        assert amountless.bolt11.startswith("lnbcrt1")
        status, body = await withdraw(session, url, key, amountless.bolt11, "amountless-01")
        assert_problem(status, body, 422)
        assert "amount" in str(body["detail"])


async def test_3_the_lnd_client_keeps_values_inside_their_path_segment(network: Network) -> None:
    node = network.node("gateway")
    async with LndRestClient(node.rest_url, node.tls_cert, node.admin_macaroon) as lnd:
        # Unquoted, this was GET /v1/getinfo with the gateway's macaroon.
        with pytest.raises(LightningError):
            await lnd.decode_invoice(EVIL_INVOICE)
        assert await lnd.network() == "regtest"


# --- 9. bad input is never a 500 -----------------------------------------------------


async def test_9_bad_input_is_a_4xx_problem_never_a_500(
    session: aiohttp.ClientSession, gateway_url: str
) -> None:
    up = await upload_raw(session, gateway_url, random_bytes(100), chunk_size=4096)
    fid, owner = up.file_id, bearer(up.api_key)
    json_bogus = {"Content-Type": "application/json; charset=bogus"}
    cases: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
        # '²' passes str.isdigit() but not int().
        ("GET", f"/v1/files/{fid}/chunks/%C2%B2", None, {}, 400),
        ("GET", f"/v1/files/{fid}/chunks/0?count=%C2%B2", None, {}, 400),
        ("PUT", f"/v1/files/{fid}/chunks/%D9%A1", b"x", owner, 400),
        ("POST", "/v1/files", b"{}", owner | json_bogus, 415),
        ("POST", "/v1/l402/preimage", b'{"macaroon": "x"}', json_bogus, 415),
        ("POST", "/v1/files", b"[" * 100_000, owner, 400),
        ("POST", "/v1/l402/preimage", b"[" * 100_000, {}, 400),
        ("POST", "/v1/account/plans", b"[" * 100_000, owner, 400),
        ("POST", "/v1/files", b"\xff\xfe{}", owner, 400),
    ]
    for method, path, data, headers, expected in cases:
        async with session.request(
            method, URL(gateway_url + path, encoded=True), data=data, headers=headers
        ) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == expected, (method, path, body)
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            assert {"type", "title", "detail"} <= body.keys(), (method, path, body)


async def test_9_an_lnd_refusal_is_a_502_problem(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    # A node that answers but refuses: this macaroon may read, not create invoices.
    base = gateway_config(network, tmp_path)
    readonly = network.node("gateway").admin_macaroon.with_name("readonly.macaroon")
    assert readonly.is_file()
    config = base.model_copy(update={"lnd": base.lnd.model_copy(update={"macaroon": readonly})})
    async with running(config) as (url, _):
        up = await upload_raw(session, url, random_bytes(100), chunk_size=4096)
        async with session.get(f"{url}/v1/files/{up.file_id}/chunks/0") as resp:
            body = await resp.json(content_type=None)
        assert_problem(resp.status, body, 502)
        assert str(body["type"]).endswith("lightning-error")
        assert "127.0.0.1" not in str(body["detail"]) and "/v1/" not in str(body["detail"])


async def test_9_ranges_are_capped_at_the_largest_invoice_lnd_creates(
    session: aiohttp.ClientSession, network: Network, gateway_url: str
) -> None:
    # The cap is LND's own ceiling: one satoshi more and the node refuses (it compares
    # whole satoshis).
    lnd = network.node("gateway").client
    assert (await lnd.create_invoice(MAX_INVOICE_MSAT, "ceiling")).amount_msat == MAX_INVOICE_MSAT
    with pytest.raises(LightningError, match="too large"):
        await lnd.create_invoice(MAX_INVOICE_MSAT + 1_000, "over the ceiling")
    # The dearest range the API can ask for is invoiced (a 402, not a 5xx).
    price = 100_000_000  # the highest per-chunk price an upload may set
    up = await upload_raw(
        session, gateway_url, random_bytes(50 * 4096), price_msat=price, chunk_size=4096
    )
    async with session.get(f"{gateway_url}/v1/files/{up.file_id}/chunks/0?count=99999") as r:
        body = await r.json(content_type=None)
    assert_problem(r.status, body, 402)
    assert body["count"] == 50 and body["amount_msat"] == 50 * price


# --- 4. abuse limits -------------------------------------------------------------------


async def open_account(
    session: aiohttp.ClientSession, gateway: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object], CIMultiDictProxy[str]]:
    async with session.post(f"{gateway}/v1/accounts", headers=headers or {}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def forwarded(*hops: str) -> dict[str, str]:
    return {"X-Forwarded-For": ", ".join(hops)}


async def test_4_signups_are_limited_per_client_behind_trusted_proxies(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(
        network,
        tmp_path,
        trusted_proxies=1,
        signup_client_burst=2,
        signup_client_rate_per_s=0.001,
    )
    async with running(config) as (url, _):
        # The proxy (this test's connection) appends the client, 203.0.113.7; whatever the
        # client itself put in front changes nothing.
        statuses = []
        for i in range(3):
            status, body, headers = await open_account(
                session, url, forwarded(f"6.6.6.{i}", "203.0.113.7")
            )
            statuses.append(status)
        assert statuses == [201, 201, 429]
        assert_problem(status, body, 429)
        assert str(body["type"]).endswith("too-many-signups")
        assert int(str(headers["Retry-After"])) >= 1
        # IPv6 clients are grouped by /64: rotating inside it buys nothing.
        statuses = []
        for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
            status, _, _ = await open_account(session, url, forwarded("6.6.6.6", host))
            statuses.append(status)
        assert statuses == [201, 201, 429]
        status, _, _ = await open_account(session, url, forwarded("2001:db8:1:3::1"))
        assert status == 201


async def test_4_without_trusted_proxies_forwarded_for_changes_nothing(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(
        network, tmp_path, signup_client_burst=2, signup_client_rate_per_s=0.001
    )
    async with running(config) as (url, _):
        statuses = [
            (await open_account(session, url, forwarded(f"198.51.100.{i}")))[0] for i in range(3)
        ]
        assert statuses == [201, 201, 429]


async def test_4_signups_are_limited_per_tenant(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(
        network, tmp_path, trusted_proxies=1, signup_tenant_burst=3, signup_tenant_rate_per_s=0.001
    )
    async with running(config) as (url, _):
        statuses: list[int] = []
        body: dict[str, object] = {}
        for i in range(4):
            status, body, _ = await open_account(session, url, forwarded(f"192.0.2.{i}"))
            statuses.append(status)
        assert statuses == [201, 201, 201, 429]
        assert "this service" in str(body["detail"])


async def test_4_a_tenant_can_charge_for_signup_over_lightning(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    tenant = TenantSettings(signup_price_msat=5_000)
    operator = "op-" + "o" * 40
    config = gateway_config(network, tmp_path, tenants=[tenant], operator_token=operator)
    async with running(config) as (url, _):
        status, challenge, headers = await open_account(session, url)
        assert_problem(status, challenge, 402)
        assert challenge["amount_msat"] == 5_000
        assert [v.split(" ", 1)[0] for v in headers.getall("WWW-Authenticate")] == ["LSAT", "L402"]
        macaroon, invoice = str(challenge["macaroon"]), str(challenge["invoice"])

        # Unpaid (a made-up preimage): refused with a fresh challenge.
        status, body, _ = await open_account(
            session, url, {"Authorization": f"L402 {macaroon}:{'00' * 32}"}
        )
        assert_problem(status, body, 402)
        assert "token refused" in str(body["detail"])

        payment = await network.node("payer").client.pay_invoice(invoice, 1_000)
        assert payment.amount_msat == 5_000
        paid = {"Authorization": f"L402 {macaroon}:{payment.preimage.hex()}"}
        status, account, _ = await open_account(session, url, paid)
        assert status == 201, account
        api_key = str(account["api_key"])
        async with session.get(f"{url}/v1/account", headers=bearer(api_key)) as resp:
            assert resp.status == 200
        # One payment, one account.
        status, body, _ = await open_account(session, url, paid)
        assert_problem(status, body, 409)
        assert str(body["type"]).endswith("signup-token-used")
        # Booked as the tenant's signup takings, inside its own books (they sum to zero).
        async with session.get(f"{url}/v1/operator/report", headers=bearer(operator)) as resp:
            assert resp.status == 200
            report = (await resp.json())["tenants"][0]
        assert report["signups_msat"] == 5_000
        assert report["ledger_sum_msat"] == 0

        # A paid chunk token does not open an account.
        up = await upload_raw(session, url, random_bytes(100), chunk_size=4096, api_key=api_key)
        async with session.get(f"{url}/v1/files/{up.file_id}/chunks/0") as resp:
            chunk_challenge = await resp.json()
        chunk_payment = await network.node("payer").client.pay_invoice(
            chunk_challenge["invoice"], 1_000
        )
        status, body, _ = await open_account(
            session,
            url,
            {"Authorization": f"L402 {chunk_challenge['macaroon']}:{chunk_payment.preimage.hex()}"},
        )
        assert_problem(status, body, 402)
        assert "not for opening an account" in str(body["detail"])


async def test_4_a_tenants_free_tier_has_a_total_cap(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    plan = Plan(id="tiny", name="Tiny", quota_bytes=10**9, duration_s=3_600, price_msat=10_000)
    tenant = TenantSettings(free_tier_total_bytes=50_000, plans=[plan])
    async with running(gateway_config(network, tmp_path, tenants=[tenant])) as (url, _):
        _, first = await create_account(session, url)
        _, second = await create_account(session, url)
        _, buyer = await create_account(session, url)
        first_file, _ = await create_file(session, url, first, 30_000)

        async def new_file(api_key: str, size: int) -> tuple[int, dict[str, object]]:
            enc = FileEncryptor(new_file_key(), new_file_id(), size)
            body = {"header": enc.header.to_json_dict(), "manifest": b64url_encode(b"m" * 40)}
            async with session.post(f"{url}/v1/files", json=body, headers=bearer(api_key)) as r:
                return r.status, await r.json(content_type=None)

        # Within the second account's own quota, but the free tier as a whole is full.
        status, body = await new_file(second, 30_000)
        assert_problem(status, body, 507)
        assert str(body["type"]).endswith("free-tier-full")
        # Room comes back when free-tier bytes are freed.
        async with session.delete(f"{url}/v1/files/{first_file}", headers=bearer(first)) as r:
            assert r.status == 200
        assert (await new_file(second, 30_000))[0] == 201
        assert (await new_file(buyer, 30_000))[0] == 507
        # A plan holder pays for its space: the free tier's cap does not apply.
        async with session.post(
            f"{url}/v1/account/plans", json={"plan_id": "tiny"}, headers=bearer(buyer)
        ) as resp:
            assert resp.status == 201
            invoice = (await resp.json())["invoice"]
        await network.node("payer").client.pay_invoice(invoice, 1_000)

        async def on_plan() -> bool:
            async with session.get(f"{url}/v1/account", headers=bearer(buyer)) as resp:
                return any(p["active"] for p in (await resp.json())["plans"])

        await wait_until("the plan to be booked", on_plan, 15, every_s=0.1)
        assert (await new_file(buyer, 30_000))[0] == 201


async def test_4_health_asks_lnd_once_a_second_and_a_settled_preimage_never_again(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    async with lnd_behind_proxy(network, tmp_path) as (url, _, lnd):
        said = lnd.sent
        async with session.get(f"{url}/v1/health") as resp:
            assert resp.status == 200
        one_call = lnd.sent - said
        assert one_call > 0
        said = lnd.sent
        answers = await asyncio.gather(*(session.get(f"{url}/v1/health") for _ in range(20)))
        assert [r.status for r in answers] == [200] * 20
        for r in answers:
            r.release()
        # At most one more check, should a second have passed meanwhile.
        assert lnd.sent - said <= one_call, "every health request called LND"

        _, key = await create_account(session, url)
        up = await upload_raw(session, url, random_bytes(100), chunk_size=4096, api_key=key)
        async with session.get(f"{url}/v1/files/{up.file_id}/chunks/0") as resp:
            challenge = await resp.json()

        async def ask() -> tuple[int, dict[str, object]]:
            async with session.post(
                f"{url}/v1/l402/preimage", json={"macaroon": challenge["macaroon"]}
            ) as resp:
                return resp.status, await resp.json()

        assert (await ask())[0] == 202
        payment = await network.node("payer").client.pay_invoice(challenge["invoice"], 1_000)

        async def settled() -> bool:
            return (await ask())[0] == 200

        await wait_until("the preimage to be handed out", settled, 15, every_s=0.2)
        said = lnd.sent
        for status, body in await asyncio.gather(*(ask() for _ in range(20))):
            assert status == 200 and body["preimage"] == payment.preimage.hex()
        assert lnd.sent == said, "a settled invoice was looked up again"


# --- 10. slow clients, buffered bodies, health, CSP, the README's macaroon ------------


async def raw_request(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_10_a_slow_request_head_is_cut_off(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(network, tmp_path, header_timeout_s=1)
    async with serve(config) as url:
        reader, writer = await raw_request(config.port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        try:
            # The server hangs up without an answer once the head is overdue.
            assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        finally:
            writer.close()
        async with session.get(f"{url}/v1/health") as resp:
            assert resp.status == 200


async def test_10_a_slow_request_body_is_408(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(network, tmp_path, body_timeout_s=1)
    async with serve(config) as url:
        _, key = await create_account(session, url)
        head = (
            "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: 1000\r\n\r\n"
        )
        reader, writer = await raw_request(config.port, head.encode() + b'{"header": ')
        try:
            head_in = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = int(re.search(rb"Content-Length: (\d+)", head_in).group(1))  # type: ignore[union-attr]
            body = json.loads(await reader.readexactly(length))
        finally:
            writer.close()
        assert head_in.startswith(b"HTTP/1.1 408"), head_in
        assert b"Connection: close" in head_in
        assert body["type"].endswith("body-timeout")


async def test_10_concurrently_buffered_bodies_are_capped(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    # Room for two 32 KiB bodies; a third request's body does not fit.
    config = gateway_config(network, tmp_path, max_buffered_body_bytes=64 * 1024, body_timeout_s=60)
    async with running(config) as (url, _):
        _, key = await create_account(session, url)
        head = (
            "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: 32768\r\n\r\n"
        ).encode()
        slow = [await raw_request(config.port, head + b"{") for _ in range(2)]
        await reaches("BaseRequest.read", tasks=2)  # both hold a slot, reading
        try:
            async with session.post(f"{url}/v1/files", json={}, headers=bearer(key)) as resp:
                body = await resp.json(content_type=None)
                assert_problem(resp.status, body, 503)
                assert str(body["type"]).endswith("too-many-uploads")
                assert int(resp.headers["Retry-After"]) >= 1
            async with session.get(f"{url}/v1/health") as resp:  # no body: not limited
                assert resp.status == 200
            # One slow body completes: its slot is free again.
            reader, writer = slow.pop()
            writer.write(b'"x": 1}'.ljust(32767))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
            assert answer.startswith(b"HTTP/1.1 400")
            writer.close()
            async with session.post(f"{url}/v1/files", json={}, headers=bearer(key)) as resp:
                assert resp.status == 400  # read and judged, not turned away
        finally:
            for _, writer in slow:
                writer.close()


async def test_10_health_does_not_reveal_internal_urls(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    lnd_proxy = TcpProxy("127.0.0.1", network.node("gateway").rest_port)
    await lnd_proxy.start()
    base = gateway_config(network, tmp_path)
    update, storage = await proxied_storage(network, base)  # kubo, and the cluster's REST API
    update["lnd"] = base.lnd.model_copy(update={"rest_url": f"https://127.0.0.1:{lnd_proxy.port}"})
    config = base.model_copy(update=update)
    kubo_proxy = storage[0]
    try:
        for proxy in [lnd_proxy, *storage]:
            await proxy.cut()
        async with serve(config) as url, session.get(f"{url}/v1/health") as resp:
            assert resp.status == 503
            text = await resp.text()
        body = json.loads(text)
        assert body["lnd"] == {"ok": False, "error": "unreachable"}
        assert body["kubo"] == {"ok": False, "error": "unreachable"}
        for secret in ("127.0.0.1", str(lnd_proxy.port), str(kubo_proxy.port), "http", "/v1/"):
            assert secret not in text.replace(str(body.get("type")), ""), secret
    finally:
        for proxy in [lnd_proxy, *storage]:
            await proxy.cut()


async def test_10_the_csp_allows_the_tenants_own_logo(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    if not (STATIC_DIR / "upload.js").is_file():
        pytest.fail("the web app is not built: `make web` builds it into gateway/static")
    tenants = [
        TenantSettings(
            id="acme",
            hostnames=["acme.localhost"],
            brand=Brand(logo_url="https://cdn.acme.example:8443/brand/logo.svg"),
        ),
        TenantSettings(id="plain", hostnames=["*"]),
    ]
    async with running(gateway_config(network, tmp_path, tenants=tenants)) as (url, _):
        async with session.get(f"{url}/", headers={"Host": "acme.localhost"}) as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            page = await resp.text()
        img_src = next(d for d in csp.split(";") if d.strip().startswith("img-src")).split()
        assert "https://cdn.acme.example:8443" in img_src
        assert 'src="https://cdn.acme.example:8443/brand/logo.svg"' in page
        async with session.get(f"{url}/") as resp:
            assert "acme" not in resp.headers["Content-Security-Policy"]


async def bake_macaroon(node: LndNode, permissions: list[str]) -> bytes:
    """A macaroon with exactly these entity:action permissions, baked by the node."""
    ctx = ssl.create_default_context(cafile=str(node.tls_cert))
    ctx.check_hostname = False
    body = {
        "permissions": [{"entity": p.split(":")[0], "action": p.split(":")[1]} for p in permissions]
    }
    headers = {"Grpc-Metadata-macaroon": node.admin_macaroon.read_bytes().hex()}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{node.rest_url}/v1/macaroon", json=body, headers=headers, ssl=ctx) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return bytes.fromhex((await resp.json())["macaroon"])


async def test_10_the_readmes_macaroon_can_do_everything_the_gateway_does(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"lncli bakemacaroon ((?:[a-z]+:[a-z]+ ?)+)", readme)
    assert match is not None, "the README no longer says which macaroon to bake"
    permissions = match.group(1).split()
    macaroon = tmp_path / "gateway.macaroon"
    macaroon.write_bytes(await bake_macaroon(network.node("gateway"), permissions))
    base = gateway_config(network, tmp_path / "gw")
    config = base.model_copy(update={"lnd": base.lnd.model_copy(update={"macaroon": macaroon})})
    payer = network.node("payer").client
    async with serve_gateway(config) as url:
        async with session.get(f"{url}/v1/health") as resp:  # info:read
            assert resp.status == 200
        # A sale: invoice created (invoices:write), paid, looked up (invoices:read).
        up = await upload_raw(session, url, random_bytes(100), price_msat=20_000, chunk_size=4096)
        chunk = f"{url}/v1/files/{up.file_id}/chunks/0"
        async with session.get(chunk) as resp:
            assert resp.status == 402
            challenge = await resp.json()
        payment = await payer.pay_invoice(challenge["invoice"], 1_000)
        async with session.post(
            f"{url}/v1/l402/preimage", json={"macaroon": challenge["macaroon"]}
        ) as resp:
            assert resp.status == 200
        token = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
        async with session.get(chunk, headers=token) as resp:
            assert resp.status == 200
        # A withdrawal of the earnings: decode, send and track (offchain:read/write).
        invoice = await payer.create_invoice(10_000, "earnings")
        status, body = await withdraw(session, url, up.api_key, invoice.bolt11, "readme-0001")
        assert status == 200, body
        assert body["state"] == "succeeded"
