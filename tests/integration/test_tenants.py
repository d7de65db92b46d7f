"""Two brands on one deployment, told apart by Host; B has its own LND node."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import LndSettings, TenantSettings
from gateway.server import serve
from regtest.network import Network, wait_until
from tests.conftest import database_url_for, gateway_config
from tests.sql import execute, fetch_all, fetch_value
from tests.support import bearer, random_bytes, upload_raw

pytestmark = pytest.mark.integration

CHUNK = 4096
OPERATOR = "op-" + secrets.token_hex(8)
A, B = "files.alpha.test", "share.beta.test"


def tenants(network: Network) -> list[TenantSettings]:
    payer = network.node("payer")
    return [
        TenantSettings(
            id="alpha",
            display_name="Alpha",
            hostnames=[A],
            default_price_msat=1_000,
            free_quota_bytes=50_000,
            operator_fee_bps=1_000,
        ),
        TenantSettings(
            id="beta",
            display_name="Beta",
            hostnames=[B],
            public_url="https://share.beta.test",
            default_price_msat=3_000,
            free_quota_bytes=100_000,
            operator_fee_bps=2_000,
            # Beta's own node: its invoices and earnings are its own.
            lnd=LndSettings(
                rest_url=payer.rest_url, tls_cert=payer.tls_cert, macaroon=payer.gateway_macaroon
            ),
        ),
    ]


class HostSession:
    """An aiohttp session whose every request names one Host, as a browser on that domain."""

    def __init__(self, session: aiohttp.ClientSession, url: str, host: str) -> None:
        self.session, self.url, self.host = session, url, host

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Host": self.host} | kw.pop("headers", {})
        return self.session.request(method, self.url + path, headers=headers, **kw)


@pytest.fixture(scope="module")
async def deployment(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("tenants")
    tenants_file = data / "tenants.json"
    tenants_file.write_text(
        json.dumps({"tenants": [t.model_dump(mode="json") for t in tenants(network)]})
    )
    config = gateway_config(network, data, tenants_file=tenants_file, operator_token=OPERATOR)
    async with serve(config) as url:
        yield url, tenants_file


async def upload_on(url: str, host: str) -> Any:
    """upload_raw, but on one tenant's host name."""
    headers_session = aiohttp.ClientSession(headers={"Host": host})
    try:
        return await upload_raw(headers_session, url, random_bytes(2 * CHUNK), chunk_size=CHUNK)
    finally:
        await headers_session.close()


async def test_each_tenant_sees_only_its_own_accounts_and_files(
    deployment: tuple[str, Path],
) -> None:
    url, _ = deployment
    async with aiohttp.ClientSession() as s:
        a, b = HostSession(s, url, A), HostSession(s, url, B)
        up = await upload_on(url, A)
        async with a.request("GET", f"/v1/files/{up.file_id}") as r:
            assert r.status == 200
            state = await r.json()
            assert state["link_base"] == f"http://{A}/f/{up.file_id}"
        async with b.request("GET", f"/v1/files/{up.file_id}") as r:
            assert r.status == 404
        async with b.request("GET", f"/v1/files/{up.file_id}/chunks/0") as r:
            assert r.status == 404
        async with b.request("GET", "/v1/account", headers=bearer(up.api_key)) as r:
            assert r.status == 401
        async with a.request("GET", "/v1/account", headers=bearer(up.api_key)) as r:
            usage = await r.json()
            assert usage["tenant"] == "alpha" and usage["limit_bytes"] == 50_000
        up_b = await upload_on(url, B)
        async with b.request("GET", f"/v1/files/{up_b.file_id}") as r:
            assert (await r.json())["link_base"] == f"https://share.beta.test/f/{up_b.file_id}"
        async with b.request("GET", "/v1/account", headers=bearer(up_b.api_key)) as r:
            assert (await r.json())["limit_bytes"] == 100_000


async def test_prices_follow_the_tenant_and_beta_is_paid_on_its_own_node(
    deployment: tuple[str, Path], network: Network
) -> None:
    url, _ = deployment
    async with aiohttp.ClientSession() as s:
        a, b = HostSession(s, url, A), HostSession(s, url, B)
        up_a, up_b = await upload_on(url, A), await upload_on(url, B)
        async with a.request("GET", f"/v1/files/{up_a.file_id}/chunks/0?count=2") as r:
            assert (await r.json())["amount_msat"] == 2 * 1_000
        async with b.request("GET", f"/v1/files/{up_b.file_id}/chunks/0?count=2") as r:
            challenge = await r.json()
        assert challenge["amount_msat"] == 2 * 3_000
        # Beta's invoice is on Beta's node (the regtest `payer` node) …
        beta_node, other = network.node("payer").client, network.node("gateway").client
        decoded = await beta_node.decode_invoice(challenge["invoice"])
        assert decoded.destination == network.node("payer").pubkey
        # … so someone else (here the `gateway` node's wallet) pays it.
        payment = await other.pay_invoice(challenge["invoice"], fee_limit_msat=1_000)
        auth = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
        async with b.request("GET", f"/v1/files/{up_b.file_id}/chunks/1", headers=auth) as r:
            assert r.status == 200 and await r.read() == up_b.sealed[1]
        # The same token means nothing on Alpha's host.
        async with a.request("GET", f"/v1/files/{up_b.file_id}/chunks/1", headers=auth) as r:
            assert r.status == 404

        async def booked() -> bool:
            async with b.request("GET", "/v1/account", headers=bearer(up_b.api_key)) as r:
                return bool((await r.json())["balance_msat"] > 0)

        await wait_until("Beta's sale to be booked", booked, timeout_s=10)
        async with b.request("GET", "/v1/account", headers=bearer(up_b.api_key)) as r:
            assert (await r.json())["balance_msat"] == 6_000 - 6_000 * 2_000 // 10_000
        async with a.request("GET", "/v1/operator/report", headers=bearer(OPERATOR)) as r:
            report = await r.json()
        fees = {t["tenant"]: t["fees_msat"] for t in report["tenants"]}
        assert fees["beta"] == 1_200 and fees["alpha"] == 0
        assert report["ledger"]["consistent"]


async def test_unknown_or_missing_host_is_refused_cleanly(deployment: tuple[str, Path]) -> None:
    url, _ = deployment
    async with aiohttp.ClientSession() as s:
        async with HostSession(s, url, "evil.test").request("POST", "/v1/accounts") as r:
            assert r.status == 421
            body = await r.json()
            assert body["type"].endswith("unknown-host") and "evil.test" in body["detail"]
        # 127.0.0.1 is not a tenant host here either.
        async with s.post(f"{url}/v1/accounts") as r:
            assert r.status == 421
        async with s.get(f"{url}/v1/health") as r:
            assert r.status == 200  # health answers on any host
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v1/plans HTTP/1.0\r\n\r\n")  # no Host header at all
    await writer.drain()
    status_line = (await reader.readline()).decode()
    writer.close()
    assert " 421 " in status_line


async def test_tenant_changes_apply_without_a_restart(
    deployment: tuple[str, Path], network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    url, tenants_file = deployment
    admin = [sys.executable, "-m", "gateway.admin", "--file", str(tenants_file), "tenant"]

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *admin, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await run("add", "gamma", "--host", "gamma.test", "--price-msat", "7000")
    assert code == 0, out
    code, out = await run("add", "clash", "--host", A)
    assert code == 1 and "belongs to both" in out
    async with aiohttp.ClientSession() as s:
        gamma = HostSession(s, url, "gamma.test")

        async def live() -> bool:
            async with gamma.request("POST", "/v1/accounts") as r:
                return r.status == 201

        await wait_until("the new tenant to be served", live, timeout_s=5)
        up = await upload_on(url, "gamma.test")  # no price given: the tenant's default

        async def price_per_chunk() -> int:
            async with gamma.request("GET", f"/v1/files/{up.file_id}/chunks/0") as r:
                assert r.status == 402
                return int((await r.json())["price_msat"])

        assert await price_per_chunk() == 7_000
        code, out = await run("set", "gamma", "default_price_msat=9000")
        assert code == 0, out

        async def repriced() -> bool:
            nonlocal up
            up = await upload_on(url, "gamma.test")
            return await price_per_chunk() == 9_000

        await wait_until("`tenant set` to change new uploads' price", repriced, timeout_s=5)
        code, out = await run("remove", "gamma")
        assert code == 0, out

        async def gone() -> bool:
            async with gamma.request("POST", "/v1/accounts") as r:
                return r.status == 421

        await wait_until("the removed tenant to stop answering", gone, timeout_s=5)
        # The file was edited behind the gateway's back into something invalid: kept as is.
        caplog.set_level(logging.ERROR, "bitcache.tenants")
        tenants_file.write_text("{not json")

        async def refused() -> bool:
            return any("keeping the previous tenants" in r.getMessage() for r in caplog.records)

        async def ask() -> bool:  # the file is re-read when a request needs the tenants
            async with HostSession(s, url, A).request("GET", "/v1/plans") as r:
                assert r.status == 200
            return await refused()

        await wait_until("the broken tenants file to be read and refused", ask, timeout_s=5)
        async with HostSession(s, url, A).request("GET", "/v1/plans") as r:
            assert r.status == 200


async def test_betas_node_reporting_an_alpha_invoice_books_nothing(
    deployment: tuple[str, Path], network: Network
) -> None:
    """Beta's node (the regtest `payer`) reports, on its real invoice stream, a settled
    invoice whose payment hash is also an open Alpha invoice's: as a tenant's own node
    could claim of any hash. Alpha's invoice was issued by the gateway's node, so Beta's
    watcher must not book it."""
    url, tenants_file = deployment
    data = tenants_file.parent
    database = database_url_for(data) or data / "gateway.sqlite3"
    beta_node, gateway_node = network.node("payer"), network.node("gateway")
    up = await upload_on(url, A)
    # The collision: an invoice on Beta's node, recorded as an open Alpha chunk invoice
    # issued by the gateway's node (what a lying Beta node's stream makes of any hash).
    claim = await beta_node.client.create_invoice(4_000, "collision")
    await execute(
        database,
        "INSERT INTO invoices (payment_hash, file_id, first_chunk, last_chunk, amount_msat,"
        " bolt11, created_at, expires_at, tenant_id, node_id)"
        " VALUES (?, ?, 0, 1, 4000, ?, 0, 4102444800, 'alpha', ?)",
        claim.payment_hash,
        up.file_id,
        claim.bolt11,
        gateway_node.pubkey,
    )
    await gateway_node.client.pay_invoice(claim.bolt11, fee_limit_msat=1_000)
    settled = await beta_node.client.lookup_invoice(claim.payment_hash)
    assert settled.state == "settled" and settled.settle_index > 0

    async def beta_stream_index() -> int:
        """How far Beta's watcher has read its node's stream (its settle index)."""
        rows = await fetch_all(
            database,
            "SELECT value FROM gateway_state WHERE key LIKE ?",
            f"lnd_settle_index:{beta_node.rest_url}%",
        )
        return max((int(r[0]) for r in rows), default=0)

    async def heard() -> bool:
        return await beta_stream_index() >= settled.settle_index

    await wait_until("Beta's watcher to read the settlement", heard, timeout_s=15, every_s=0.1)
    state = await fetch_value(
        database, "SELECT state FROM invoices WHERE payment_hash = ?", claim.payment_hash
    )
    assert state == "open"
    async with aiohttp.ClientSession() as s:
        a = HostSession(s, url, A)
        async with a.request("GET", "/v1/account", headers=bearer(up.api_key)) as r:
            assert (await r.json())["balance_msat"] == 0
        async with a.request("GET", "/v1/operator/report", headers=bearer(OPERATOR)) as r:
            report = await r.json()
    assert {t["tenant"]: t["fees_msat"] for t in report["tenants"]}["alpha"] == 0
    assert report["ledger"]["consistent"]


async def test_each_tenants_books_sum_to_zero_after_sales_and_payouts(
    deployment: tuple[str, Path], network: Network
) -> None:
    """Alpha sells and pays out through the gateway's node, Beta through its own: each
    tenant's sales come in and its payouts go out through its own outside-world account,
    so each tenant's balances sum to zero on their own, not only the deployment's."""
    url, _ = deployment
    alpha_node, beta_node = network.node("gateway").client, network.node("payer").client
    async with aiohttp.ClientSession() as s:
        for host, sells_on, buyer in ((A, alpha_node, beta_node), (B, beta_node, alpha_node)):
            tenant = HostSession(s, url, host)
            headers_session = aiohttp.ClientSession(headers={"Host": host})
            try:
                up = await upload_raw(
                    headers_session,
                    url,
                    random_bytes(2 * CHUNK),
                    price_msat=10_000,
                    chunk_size=CHUNK,
                )
            finally:
                await headers_session.close()
            async with tenant.request("GET", f"/v1/files/{up.file_id}/chunks/0?count=2") as r:
                challenge = await r.json()
            assert (await sells_on.decode_invoice(challenge["invoice"])).amount_msat == 20_000
            payment = await buyer.pay_invoice(challenge["invoice"], fee_limit_msat=1_000)
            auth = {"Authorization": f"L402 {challenge['macaroon']}:{payment.preimage.hex()}"}
            async with tenant.request("GET", f"/v1/files/{up.file_id}/chunks/1", headers=auth) as r:
                assert r.status == 200
            # The uploader withdraws part of the earnings to an invoice of the other node.
            payout = await buyer.create_invoice(5_000, "payout")
            headers = bearer(up.api_key) | {"Idempotency-Key": "books-" + secrets.token_hex(6)}
            async with tenant.request(
                "POST", "/v1/account/withdrawals", json={"invoice": payout.bolt11}, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
            assert (await buyer.lookup_invoice(payout.payment_hash)).state == "settled"
        async with HostSession(s, url, A).request(
            "GET", "/v1/operator/report", headers=bearer(OPERATOR)
        ) as r:
            report = await r.json()
    books = {t["tenant"]: t["ledger_sum_msat"] for t in report["tenants"]}
    assert books == {"alpha": 0, "beta": 0}
    assert report["ledger"]["consistent"]
