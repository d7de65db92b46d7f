"""Routing fees for real: payments through the regtest `router`, which charges a non-zero fee.

    payer ──── gateway ──── router ──── far_payer

A withdrawal from the gateway to `far_payer` and a download paid by `far_payer` both cross
the router, so each pays its fee; the ledger and the client must account for exactly it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from client.api import BitcacheClient
from client.config import ClientConfig, LndConnection
from gateway.config import TenantSettings
from regtest.network import Network, router_fee_msat, wait_until
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.support import bearer, create_account, random_bytes, upload_raw

pytestmark = pytest.mark.integration

CHUNK = 4096
MIB = 1024 * 1024
OPERATOR = "operator-" + secrets.token_hex(8)
TENANT = TenantSettings(operator_fee_bps=1_000)


@pytest.fixture(scope="module")
async def gw(network: Network, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    config = gateway_config(
        network,
        tmp_path_factory.mktemp("routing"),
        tenants=[TENANT],
        operator_token=OPERATOR,
        # The reserve must cover the router's fee (1 500 msat + 1 000 ppm).
        withdrawal_min_fee_msat=5_000,
        default_price_msat=3_000,
    )
    async with serve_gateway(config) as url:
        yield url


async def _report(session: aiohttp.ClientSession, gw: str) -> dict[str, object]:
    async with session.get(f"{gw}/v1/operator/report", headers=bearer(OPERATOR)) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def _balance(session: aiohttp.ClientSession, gw: str, key: str) -> int:
    async with session.get(f"{gw}/v1/account", headers=bearer(key)) as resp:
        return int((await resp.json())["balance_msat"])


async def test_a_routed_withdrawal_pays_the_routers_fee_from_its_reserve_and_books_it(
    network: Network, gw: str
) -> None:
    async with aiohttp.ClientSession() as session:
        # Earnings first: a payer buys 2 chunks at 40 000 msat → 72 000 msat after the fee.
        _, key = await create_account(session, gw)
        up = await upload_raw(
            session, gw, random_bytes(2 * CHUNK), price_msat=40_000, chunk_size=CHUNK, api_key=key
        )
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count=2") as resp:
            challenge = await resp.json()
        paid = await network.node("payer").client.pay_invoice(challenge["invoice"], 1_000)
        auth = {"Authorization": f"L402 {challenge['macaroon']}:{paid.preimage.hex()}"}
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/1", headers=auth) as resp:
            assert resp.status == 200

        async def earned() -> bool:
            return await _balance(session, gw, key) == 72_000

        await wait_until("the sale to be booked", earned, timeout_s=15)

        far = network.node("far_payer").client
        amount = 20_000
        invoice = await far.create_invoice(amount, "routed withdrawal")
        router = network.node("router").client
        await network.wait_idle()
        router_before, _ = await router.channel_balance_msat()
        async with session.post(
            f"{gw}/v1/account/withdrawals",
            json={"invoice": invoice.bolt11},
            headers=bearer(key) | {"Idempotency-Key": "routed-" + secrets.token_hex(4)},
        ) as resp:
            assert resp.status == 200, await resp.text()
            withdrawal = await resp.json()
        fee = router_fee_msat(amount)
        assert fee > 0
        # What LND reported paying, within the reserve held, is what the ledger booked.
        assert withdrawal["fee_paid_msat"] == fee <= withdrawal["fee_reserve_msat"]
        assert await _balance(session, gw, key) == 72_000 - amount - fee
        assert (await far.lookup_invoice(invoice.payment_hash)).amount_paid_msat == amount
        await network.wait_idle()
        router_after, _ = await router.channel_balance_msat()
        assert router_after - router_before == fee  # the router earned exactly that fee
        ledger = (await _report(session, gw))["ledger"]
        assert ledger == {"entries_sum_msat": 0, "balances_sum_msat": 0, "consistent": True}


async def test_a_download_paid_through_the_router_stays_within_its_fee_limit(
    network: Network, gw: str, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, gw)
    node = network.node("far_payer")
    lnd = LndConnection(
        rest_url=node.rest_url, tls_cert=node.tls_cert, macaroon=node.admin_macaroon
    )
    payer_node = network.node("payer")
    uploader = ClientConfig(
        gateway_url=gw,
        api_key=key,
        lnd=LndConnection(
            rest_url=payer_node.rest_url,
            tls_cert=payer_node.tls_cert,
            macaroon=payer_node.admin_macaroon,
        ),
    )
    # A limit above the router's fee for the largest range bought, but well below LND's
    # default of the whole amount: a route dearer than this would be refused.
    downloader = ClientConfig(gateway_url=gw, lnd=lnd, max_fee_msat=2_000)
    source = tmp_path / "routed.bin"
    source.write_bytes(os.urandom(3 * MIB + 5))
    async with BitcacheClient(uploader) as client:
        link = await client.upload(source, progress=False)
    await network.wait_idle()
    far_before, _ = await node.client.channel_balance_msat()
    gateway_before, _ = await network.node("gateway").client.channel_balance_msat()
    async with BitcacheClient(downloader) as client:
        result = await client.download(link, tmp_path / "copy.bin", progress=False)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert result.paid_msat == 3_000 * 4
    # At least one payment crossed the router, and none paid more than its limit.
    assert router_fee_msat(3_000) <= result.fees_msat
    assert result.fees_msat <= result.chunks_bought * downloader.max_fee_msat
    await network.wait_idle()
    far_after, _ = await node.client.channel_balance_msat()
    gateway_after, _ = await network.node("gateway").client.channel_balance_msat()
    assert far_before - far_after == result.paid_msat + result.fees_msat
    assert gateway_after - gateway_before == result.paid_msat
