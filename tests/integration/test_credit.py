"""Prepaid credit on the real regtest network: bought over Lightning, spent by debits.

A paid download's first byte then waits for one database debit, not for a payment
(issue 15, ttfb_paid_vs_free). Every test ends with the books checked against LND.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.api import BitcacheClient, DownloadResult
from client.payer import LndPayer
from gateway.billing import ledger
from gateway.config import GatewayConfig, TenantSettings
from gateway.server import serve
from l402.caveats import COND_VALID_UNTIL
from l402.macaroon import Macaroon, add_caveat, from_base64, to_base64
from regtest.network import Network, wait_until
from sandbox.run import sandbox_client_config
from storage.capability import ShareLink
from storage.crypto import MIN_CHUNK_SIZE
from tests.conftest import gateway_config
from tests.gateway_process import GatewayProcess
from tests.ledger_check import check_books
from tests.sql import execute, fetch_value
from tests.support import bearer, create_account, random_bytes, upload_raw

# Runs on SQLite and on PostgreSQL (make test-scale); the books check reads SQLite files.
pytestmark = pytest.mark.integration

CHUNK = 4096
PRICE = 3_000
FEE_BPS = 1_000
ALPHA, BETA = "files.alpha.test", "files.beta.test"
TENANTS = [
    TenantSettings(
        id="alpha", hostnames=[ALPHA], default_price_msat=PRICE, operator_fee_bps=FEE_BPS
    ),
    TenantSettings(id="beta", hostnames=[BETA], default_price_msat=PRICE, operator_fee_bps=FEE_BPS),
]


def config_for(network: Network, data_dir: Path, **overrides: Any) -> GatewayConfig:
    return gateway_config(
        network, data_dir, tenants=TENANTS, credit_max_msat=1_000_000, **overrides
    )


@pytest.fixture(scope="module")
def gw_config(network: Network, tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    return config_for(network, tmp_path_factory.mktemp("credit"))


@pytest.fixture(scope="module")
async def gw(gw_config: GatewayConfig) -> AsyncIterator[str]:
    async with serve(gw_config) as url:
        yield url


@pytest.fixture
async def session(
    gw: str, gw_config: GatewayConfig, network: Network
) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Host": ALPHA}) as s:
        yield s
    # After every test: the books balance and agree with LND, credit included.
    await books(gw_config, network)


async def books(config: GatewayConfig, network: Network) -> None:
    """check_books, where it can read the database (SQLite)."""
    if config.database_url is None:
        await check_books(config.database_path, network.node("gateway").client)


async def buy_credit(
    session: aiohttp.ClientSession, gw: str, network: Network, amount: int, host: str = ALPHA
) -> dict[str, str]:
    """Buys ``amount`` msat of credit from the payer node; its Authorization header."""
    async with session.post(
        f"{gw}/v1/credit", json={"amount_msat": amount}, headers={"Host": host}
    ) as resp:
        assert resp.status == 402, await resp.text()
        body = await resp.json()
    assert body["amount_msat"] == amount
    payment = await network.node("payer").client.pay_invoice(body["invoice"], 1_000)
    return {"Authorization": f"L402 {body['macaroon']}:{payment.preimage.hex()}"}


async def remaining(session: aiohttp.ClientSession, gw: str, credit: dict[str, str]) -> int:
    async with session.get(f"{gw}/v1/credit", headers=credit) as resp:
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["remaining_msat"])


async def paid_file(session: aiohttp.ClientSession, gw: str, chunks: int) -> Any:
    _, key = await create_account(session, gw)
    return await upload_raw(
        session, gw, random_bytes(chunks * CHUNK - 100), PRICE, chunk_size=CHUNK, api_key=key
    )


async def earnings(session: aiohttp.ClientSession, gw: str, api_key: str) -> int:
    async with session.get(f"{gw}/v1/account", headers=bearer(api_key)) as resp:
        return int((await resp.json())["balance_msat"])


async def test_credit_buys_a_whole_download_exactly(
    session: aiohttp.ClientSession, gw: str, network: Network
) -> None:
    credit = await buy_credit(session, gw, network, 100_000)
    assert await remaining(session, gw, credit) == 100_000  # settled on proof
    up = await paid_file(session, gw, 6)
    preimage = credit["Authorization"].rsplit(":", 1)[1]
    # Chunk 0 with ?count=4: one debit for chunks 0-3, their token in the answer.
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count=4", headers=credit) as r:
        assert r.status == 200, await r.text()
        assert await r.read() == up.sealed[0]
        assert r.headers["Bitcache-Token-Chunks"] == "0-3"
        assert int(r.headers["Bitcache-Credit-Remaining"]) == 100_000 - 4 * PRICE
        assert "no-store" in r.headers["Cache-Control"]
        range_token = {"Authorization": f"L402 {r.headers['Bitcache-Token']}:{preimage}"}
    for i in (1, 2, 3):  # the range token, no further debit
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/{i}", headers=range_token) as r:
            assert r.status == 200 and await r.read() == up.sealed[i]
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/4", headers=range_token) as r:
        assert r.status == 402
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/4?count=9", headers=credit) as r:
        assert r.status == 200 and await r.read() == up.sealed[4]
        assert r.headers["Bitcache-Token-Chunks"] == "4-5"  # clipped to the file's end
        rest = {"Authorization": f"L402 {r.headers['Bitcache-Token']}:{preimage}"}
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/5", headers=rest) as r:
        assert r.status == 200 and await r.read() == up.sealed[5]
    async with session.head(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=credit) as r:
        assert r.status == 402  # HEAD is safe: it spends nothing
    spent = 6 * PRICE
    assert await remaining(session, gw, credit) == 100_000 - spent
    assert await earnings(session, gw, up.api_key) == spent - spent * FEE_BPS // 10_000


async def test_overspend_is_refused_with_an_invoice(
    session: aiohttp.ClientSession, gw: str, network: Network, gw_config: GatewayConfig
) -> None:
    credit = await buy_credit(session, gw, network, 2 * PRICE + 1)
    up = await paid_file(session, gw, 4)
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count=3", headers=credit) as r:
        assert r.status == 402
        body = await r.json()
        assert "credit refused" in body["detail"] and "holds 6001 msat" in body["detail"]
        assert body["amount_msat"] == 3 * PRICE and body["invoice"].startswith("lnbcrt")
        assert any(v.startswith("L402 ") for v in r.headers.getall("WWW-Authenticate"))
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0?count=2", headers=credit) as r:
        assert r.status == 200
    assert await remaining(session, gw, credit) == 1
    # A spend that fails leaves the credit, the ledger and the seller as they were.
    assert await earnings(session, gw, up.api_key) == 2 * PRICE - 2 * PRICE * FEE_BPS // 10_000
    balance = await fetch_value(
        gw_config,
        "SELECT balance_msat FROM balances WHERE account = ?",
        f"{ledger.CREDIT}:alpha",
    )
    assert balance is not None and balance >= 1


async def test_amount_is_bounded(session: aiohttp.ClientSession, gw: str) -> None:
    for amount in (0, -5, 1_000_001, "12", 1.5):
        async with session.post(f"{gw}/v1/credit", json={"amount_msat": amount}) as r:
            assert r.status == 400, (amount, r.status)


async def test_fifty_concurrent_debits_never_overdraw(
    session: aiohttp.ClientSession, gw: str, network: Network
) -> None:
    credit = await buy_credit(session, gw, network, 10 * PRICE)
    up = await paid_file(session, gw, 50)

    async def one(i: int) -> int:
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/{i}", headers=credit) as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(statuses) == [200] * 10 + [402] * 40
    assert await remaining(session, gw, credit) == 0


async def test_a_credit_token_is_bound_to_its_tenant_and_gateway(
    session: aiohttp.ClientSession,
    gw: str,
    network: Network,
    tmp_path: Path,
) -> None:
    credit = await buy_credit(session, gw, network, 50_000)
    # Another tenant of the same gateway, same node: its files are not for this credit.
    async with aiohttp.ClientSession(headers={"Host": BETA}) as beta:
        up = await paid_file(beta, gw, 2)
        async with beta.get(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=credit) as r:
            assert r.status == 402
            assert "another service" in (await r.json())["detail"]
        async with beta.get(f"{gw}/v1/credit", headers=credit) as r:
            assert r.status == 401
    # Another gateway (another token secret and database) on the same node.
    other = config_for(network, tmp_path / "other")
    async with serve(other) as url, aiohttp.ClientSession(headers={"Host": ALPHA}) as s:
        up = await paid_file(s, url, 2)
        async with s.get(f"{url}/v1/files/{up.file_id}/chunks/0", headers=credit) as r:
            assert r.status == 402
            assert "signature" in (await r.json())["detail"]
    assert await remaining(session, gw, credit) == 50_000


async def test_forged_and_altered_credit_tokens_are_refused(
    session: aiohttp.ClientSession, gw: str, network: Network
) -> None:
    credit = await buy_credit(session, gw, network, 50_000)
    macaroon, preimage = credit["Authorization"].removeprefix("L402 ").split(":")
    up = await paid_file(session, gw, 2)
    mac = from_base64(macaroon)
    tampered = [
        # Caveat text changed (to another tenant): the signature no longer matches.
        Macaroon(
            mac.location,
            mac.identifier,
            (*mac.caveats[:1], b"bitcache_credit=beta", *mac.caveats[2:]),
            mac.signature,
        ),
        # A caveat dropped.
        Macaroon(mac.location, mac.identifier, mac.caveats[:-1], mac.signature),
    ]
    for forged in tampered:
        auth = {"Authorization": f"L402 {to_base64(forged)}:{preimage}"}
        async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=auth) as r:
            assert r.status == 402
            assert "signature" in (await r.json())["detail"]
    wrong = {"Authorization": f"L402 {macaroon}:{'11' * 32}"}
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=wrong) as r:
        assert r.status == 402 and "preimage" in (await r.json())["detail"]
    # The holder may narrow it (an earlier expiry): once past, it is refused.
    soon = int(time.time()) + 1
    narrowed = to_base64(add_caveat(mac, f"{COND_VALID_UNTIL}={soon}".encode()))
    narrow = {"Authorization": f"L402 {narrowed}:{preimage}"}

    async def expired() -> bool:  # asking the balance spends nothing
        async with session.get(f"{gw}/v1/credit", headers=narrow) as r:
            return r.status == 401 and "expired" in (await r.json())["detail"]

    await wait_until("the narrowed credit token to expire", expired, timeout_s=10)
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=narrow) as r:
        assert r.status == 402 and "expired" in (await r.json())["detail"]
    assert await remaining(session, gw, credit) == 50_000


async def test_expired_credit_spends_nothing(
    session: aiohttp.ClientSession, gw: str, network: Network, gw_config: GatewayConfig
) -> None:
    credit = await buy_credit(session, gw, network, 50_000)
    assert await remaining(session, gw, credit) == 50_000
    up = await paid_file(session, gw, 2)
    # Its time is up in the database (the caveat's own expiry is tested above).
    preimage = bytes.fromhex(credit["Authorization"].rsplit(":", 1)[1])
    payment_hash = hashlib.sha256(preimage).digest()
    assert await execute(
        gw_config, "UPDATE credits SET expires_at = 1 WHERE payment_hash = ?", payment_hash
    )
    async with session.get(f"{gw}/v1/files/{up.file_id}/chunks/0", headers=credit) as r:
        assert r.status == 402 and "expired" in (await r.json())["detail"]


async def test_two_processes_on_one_database_never_overdraw(
    network: Network, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"  # one database and one token secret for both processes
    a = GatewayProcess(config_for(network, shared), "a")
    b = GatewayProcess(config_for(network, shared), "b")
    try:
        await a.start()  # first alone: it creates the database
        await b.start()
        async with aiohttp.ClientSession(headers={"Host": ALPHA}) as s:
            credit = await buy_credit(s, a.url, network, 20 * PRICE)
            up = await paid_file(s, a.url, 50)

            async def one(i: int) -> int:
                url = (a.url, b.url)[i % 2]
                async with s.get(f"{url}/v1/files/{up.file_id}/chunks/{i}", headers=credit) as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(one(i) for i in range(50)))
            assert sorted(statuses) == [200] * 20 + [402] * 30
            assert await remaining(s, b.url, credit) == 0
        await books(a.config, network)
    finally:
        await a.process.stop(grace_s=5)
        await b.process.stop(grace_s=5)


# --- the client: credit first, invoices as the fallback ---------------------------------


@pytest.fixture(scope="module")
async def plain_gw(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayConfig, str]]:
    """A gateway with its default tenant (any Host), as the client reaches it."""
    config = gateway_config(
        network,
        tmp_path_factory.mktemp("credit-client"),
        default_price_msat=PRICE,
        credit_max_msat=1_000_000,
    )
    async with serve(config) as url:
        yield config, url


async def uploaded(network: Network, url: str, path: Path, chunks: int) -> ShareLink:
    async with aiohttp.ClientSession() as session:
        _, key = await create_account(session, url)
    path.write_bytes(random_bytes(chunks * MIN_CHUNK_SIZE - 7))
    async with BitcacheClient(sandbox_client_config(network, url, key)) as up:
        return await up.upload(path, progress=False, chunk_size=MIN_CHUNK_SIZE)


async def test_the_client_downloads_on_credit_and_tops_up_in_the_background(
    network: Network, plain_gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = plain_gw
    link = await uploaded(network, url, tmp_path / "src.bin", 20)
    cost = 20 * PRICE
    downloader = sandbox_client_config(network, url).model_copy(
        update={"credit_msat": 5 * cost // 2}  # two downloads, then below a quarter
    )
    payer = LndPayer(network.node("payer").client, downloader.max_fee_msat)
    wallet = tmp_path / "state" / "credit.json"

    async def download(n: int) -> DownloadResult:
        async with BitcacheClient(downloader, payer, credit_path=wallet) as client:
            result = await client.download(link, tmp_path / f"copy{n}.bin", progress=False)
        assert (tmp_path / f"copy{n}.bin").read_bytes() == (tmp_path / "src.bin").read_bytes()
        return result

    first = await download(1)
    assert payer.payments == 1  # the credit, before the first byte; no invoice per range
    assert first.credit_spent_msat == first.paid_msat == cost and first.chunks_bought == 20
    assert wallet.stat().st_mode & 0o777 == 0o600
    second = await download(2)
    assert second.credit_spent_msat == cost
    # Below a quarter after the second: a top-up was bought in the background, and kept.
    assert payer.payments == 2
    held = json.loads(wallet.read_text())["credits"]
    assert sorted(c["remaining_msat"] for c in held) == [cost // 2, 5 * cost // 2]
    third = await download(3)  # the rest of the first credit, then the top-up
    assert third.credit_spent_msat == cost and payer.payments == 2
    await books(config, network)


async def test_the_client_pays_invoices_when_the_gateway_refuses_its_credit(
    network: Network, plain_gw: tuple[GatewayConfig, str], tmp_path: Path
) -> None:
    config, url = plain_gw
    link = await uploaded(network, url, tmp_path / "src.bin", 6)
    downloader = sandbox_client_config(network, url).model_copy(update={"credit_msat": 50_000})
    payer = LndPayer(network.node("payer").client, downloader.max_fee_msat)
    wallet = tmp_path / "credit.json"
    async with BitcacheClient(downloader, payer, credit_path=wallet) as client:
        assert client.credit is not None
        credit = await client.credit.ready(url)
        assert credit is not None and credit.preimage is not None
        # The gateway's word, not the client's, is what a credit holds: spent elsewhere.
        payment_hash = hashlib.sha256(credit.preimage).digest()
        await execute(
            config, "UPDATE credits SET remaining_msat = 0 WHERE payment_hash = ?", payment_hash
        )
        payments = payer.payments
        result = await client.download(link, tmp_path / "copy.bin", progress=False)
    assert (tmp_path / "copy.bin").read_bytes() == (tmp_path / "src.bin").read_bytes()
    assert result.credit_spent_msat == 0 and result.paid_msat == 6 * PRICE
    assert payer.payments > payments
