"""/metrics: what it counts, how it labels, who may read it, one registry per app.

The whole gateway in-process on real SQLite, with a FakeNode for LND and a dict for IPFS;
the same metrics against real LND and kubo are read in tests/integration/test_scale.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import GatewayConfig, LndSettings
from gateway.http.metrics import CHUNK_ROUTE, PATH, PLANS_ROUTE
from gateway.http.openapi import document
from ipfs.errors import IpfsNotFound
from ipfs.kubo import KuboClient
from lightning.fake import FakeNetwork, FakeNode
from rest.observe import call_name, observed
from storage.crypto import MIN_CHUNK_SIZE
from tests.support import bearer, create_account, upload_raw

PRICE_MSAT = 3_000


class DictStore:
    """An in-memory BlockStore: CID = a hash of the bytes."""

    def __init__(self, _url: str = "") -> None:
        self.blocks: dict[str, bytes] = {}

    async def add(self, data: bytes, pin: bool = True) -> str:
        cid = "bafk" + hashlib.sha256(data).hexdigest()
        self.blocks[cid] = data
        return cid

    async def cat(self, cid: str) -> bytes:
        if cid not in self.blocks:
            raise IpfsNotFound(cid)
        return self.blocks[cid]

    async def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        yield await self.cat(cid)

    async def pin_add(self, cid: str) -> None:
        return None

    async def pin_rm(self, cid: str) -> None:
        return None

    async def stat_size(self, cid: str) -> int:
        return len(await self.cat(cid))

    async def version(self) -> str:
        return "dict"

    async def close(self) -> None:
        return None


def _config(tmp_path: Path, **overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "kubo_api_url": "http://127.0.0.1:9",
        "lnd": LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
        "metrics_public": True,
    }
    return GatewayConfig(**(values | overrides))


@asynccontextmanager
async def running(config: GatewayConfig, node: FakeNode) -> AsyncIterator[str]:
    server = TestServer(
        create_app(config, connect=lambda _settings: node, block_store=DictStore),
        host="127.0.0.1",
    )
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def scrape(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) → value."""
    async with session.get(url + PATH, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_a_paid_download_by_route_and_tenant(tmp_path: Path) -> None:
    network = FakeNetwork()
    node, payer = FakeNode(network, "gateway"), FakeNode(network, "payer")
    async with running(_config(tmp_path), node) as url, aiohttp.ClientSession() as session:
        up = await upload_raw(
            session, url, b"x" * (2 * MIN_CHUNK_SIZE), PRICE_MSAT, chunk_size=MIN_CHUNK_SIZE
        )
        chunk = f"{url}/v1/files/{up.file_id}/chunks/0"
        async with session.get(chunk) as resp:
            assert resp.status == 402
            challenge = await resp.json()
        paid = await payer.pay_invoice(challenge["invoice"], fee_limit_msat=1_000)
        auth = {"Authorization": f"L402 {challenge['macaroon']}:{paid.preimage.hex()}"}
        async with session.get(chunk, headers=auth) as resp:
            assert resp.status == 200
            served = len(await resp.read())
        async with session.get(f"{url}/no/such/path/{up.file_id}") as resp:
            assert resp.status == 404
        samples = await scrape(session, url)
        async with session.get(url + PATH) as resp:
            text = await resp.text()

    # Labelled by the route's pattern: no file id ever reaches a label.
    assert up.file_id not in text
    get = {"route": CHUNK_ROUTE, "method": "GET"}
    assert value(samples, "bitcache_http_requests_total", **get, status="402") == 1
    assert value(samples, "bitcache_http_requests_total", **get, status="200") == 1
    assert value(samples, "bitcache_http_request_duration_seconds_count", **get) >= 2
    put = {"route": CHUNK_ROUTE, "method": "PUT", "status": "201"}
    assert value(samples, "bitcache_http_requests_total", **put) == 2
    assert (
        value(
            samples, "bitcache_http_requests_total", route="unmatched", method="GET", status="404"
        )
        == 1
    )
    tenant = {"tenant": "default"}
    assert value(samples, "bitcache_invoices_created_total", **tenant, kind="chunks") == 1
    assert value(samples, "bitcache_invoices_settled_total", **tenant, kind="chunks") == 1
    assert (
        value(samples, "bitcache_earned_msat_total", **tenant, kind="chunks")
        == (challenge["amount_msat"])
    )
    assert value(samples, "bitcache_bytes_served_total", **tenant) == served
    assert value(samples, "bitcache_bytes_stored_total", **tenant) == sum(map(len, up.sealed))
    # Backlog gauges are read from the database at each scrape.
    assert value(samples, "bitcache_unpin_backlog") == 0
    assert value(samples, "bitcache_invoices_open", **tenant) == 0
    assert ("process_resident_memory_bytes", ()) in samples


async def test_plan_invoices_and_backlogs(tmp_path: Path) -> None:
    node = FakeNode(FakeNetwork(), "gateway")
    async with running(_config(tmp_path), node) as url, aiohttp.ClientSession() as session:
        _, key = await create_account(session, url)
        async with session.post(
            f"{url}{PLANS_ROUTE}", json={"plan_id": "1tb-30d"}, headers=bearer(key)
        ) as resp:
            assert resp.status == 201, await resp.text()
        up = await upload_raw(session, url, b"y" * MIN_CHUNK_SIZE, 0, chunk_size=MIN_CHUNK_SIZE)
        async with session.delete(
            f"{url}/v1/files/{up.file_id}", headers=bearer(up.api_key)
        ) as resp:
            assert resp.status == 200
        samples = await scrape(session, url)
    assert value(samples, "bitcache_invoices_created_total", tenant="default", kind="plan") == 1
    # The plan invoice is open until paid: what a stream takeover would reconcile.
    assert value(samples, "bitcache_invoices_open", tenant="default") == 1
    assert value(samples, "bitcache_invoices_settled_total", tenant="default", kind="plan") == 0


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    node = FakeNode(FakeNetwork(), "gateway")
    async with (
        running(_config(tmp_path / "a"), node) as a,
        running(_config(tmp_path / "b"), node) as b,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            await create_account(session, a)
        in_a, in_b = await scrape(session, a), await scrape(session, b)
    created = {"route": "/v1/accounts", "method": "POST", "status": "201"}
    assert value(in_a, "bitcache_http_requests_total", **created) == 3
    assert value(in_b, "bitcache_http_requests_total", **created) == 0


@pytest.mark.parametrize(
    ("overrides", "headers", "status"),
    [
        ({"metrics_public": False}, {}, 404),  # no operator token: metrics are off
        ({"metrics_public": False, "operator_token": "op-secret"}, {}, 401),
        ({"metrics_public": False, "operator_token": "op-secret"}, bearer("wrong"), 401),
        ({"metrics_public": False, "operator_token": "op-secret"}, bearer("op-secret"), 200),
        ({"metrics_public": True, "operator_token": "op-secret"}, {}, 200),
    ],
)
async def test_who_may_scrape(
    tmp_path: Path, overrides: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    node = FakeNode(FakeNetwork(), "gateway")
    config = _config(tmp_path, **overrides)
    async with running(config, node) as url, aiohttp.ClientSession() as session:
        # Scrapers come by IP: /metrics answers whatever the Host, like /v1/health.
        headers = headers | {"Host": "10.1.2.3:8402"}
        async with session.get(url + PATH, headers=headers) as resp:
            assert resp.status == status, await resp.text()
            if status != 200:
                assert resp.content_type == "application/problem+json"


def test_metrics_is_not_part_of_the_v1_api() -> None:
    assert PATH not in document()["paths"]
    assert not PATH.startswith("/v1/")


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/v1/invoice/" + "ab" * 32, "GET /v1/invoice"),
        ("GET", "/v1/payreq/lnbcrt10u1pjxyz", "GET /v1/payreq"),
        ("GET", "/v2/router/track/" + "cd" * 32, "GET /v2/router/track"),
        ("GET", "/v1/invoices/subscribe?settle_index=3", "GET /v1/invoices/subscribe"),
        ("POST", "/v1/invoices", "POST /v1/invoices"),
    ],
)
def test_call_names_never_carry_ids(method: str, path: str, name: str) -> None:
    assert call_name(method, path) == name


def test_observed_reports_failures_and_not_cancellations() -> None:
    calls: list[tuple[str, bool]] = []

    def observe(call: str, _seconds: float, ok: bool) -> None:
        calls.append((call, ok))

    with observed(observe, "a", (ValueError,)):
        pass
    with pytest.raises(ValueError), observed(observe, "b", (ValueError,)):
        raise ValueError
    with pytest.raises(KeyError), observed(observe, "c", (ValueError,)):
        raise KeyError  # not the remote side's failure
    assert calls == [("a", True), ("b", False), ("c", True)]


async def test_kubo_client_reports_each_call() -> None:
    """KuboClient against a small server speaking kubo's RPC: the hook hears every call."""
    calls: list[tuple[str, bool]] = []

    async def version(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"Version": "0.42.0"})

    async def pin_add(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"Message": "block not found"}, status=500)

    async def cat(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=b"z" * 1000)

    app = aiohttp.web.Application()
    app.router.add_post("/api/v0/version", version)
    app.router.add_post("/api/v0/pin/add", pin_add)
    app.router.add_post("/api/v0/cat", cat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    record: Callable[[str, float, bool], None] = lambda c, _s, ok: calls.append((c, ok))  # noqa: E731
    kubo = KuboClient(str(server.make_url("")), observe=record)
    try:
        assert await kubo.version() == "0.42.0"
        with pytest.raises(IpfsNotFound):
            await kubo.pin_add("bafkqaaa")
        assert await kubo.cat("bafkqaaa") == b"z" * 1000
    finally:
        await kubo.close()
        await server.close()
    assert calls == [("version", True), ("pin/add", False), ("cat", True)]
