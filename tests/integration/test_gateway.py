"""The gateway against real LND and kubo: the L402 flow, token rules, errors, outages."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.server import serve
from l402.caveats import Caveat
from l402.macaroon import Macaroon, add_caveat, from_base64, to_base64
from regtest import postgres
from regtest.network import Network
from storage.crypto import FileDecryptor
from tests.conftest import gateway_config
from tests.support import (
    TcpProxy,
    Uploaded,
    bearer,
    proxied_storage,
    random_bytes,
    upload_raw,
)

pytestmark = pytest.mark.integration

CHUNK = 4096


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def uploaded(session: aiohttp.ClientSession, gateway_url: str) -> Uploaded:
    return await upload_raw(session, gateway_url, random_bytes(3 * CHUNK + 100), chunk_size=CHUNK)


async def buy(
    session: aiohttp.ClientSession, network: Network, url: str
) -> tuple[str, str, dict[str, object]]:
    """GET without credentials, check the challenge, pay it; returns (macaroon, preimage, body)."""
    async with session.get(url) as resp:
        assert resp.status == 402
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        challenges = resp.headers.getall("WWW-Authenticate")
        body = await resp.json()
    assert [c.split(" ", 1)[0] for c in challenges] == ["LSAT", "L402"]
    l402 = challenges[1]
    macaroon = l402.split('macaroon="', 1)[1].split('"', 1)[0]
    invoice = l402.split('invoice="', 1)[1].split('"', 1)[0]
    assert body["invoice"] == invoice and body["macaroon"] == macaroon
    payment = await network.node("payer").client.pay_invoice(invoice, fee_limit_msat=1_000)
    assert payment.amount_msat == body["amount_msat"]
    return macaroon, payment.preimage.hex(), body


def auth(macaroon: str, preimage: str, scheme: str = "L402") -> dict[str, str]:
    return {"Authorization": f"{scheme} {macaroon}:{preimage}"}


async def test_paid_chunk_is_released_only_after_payment_and_decrypts(
    session: aiohttp.ClientSession, network: Network, gateway_url: str, uploaded: Uploaded
) -> None:
    url = f"{gateway_url}/v1/files/{uploaded.file_id}/chunks/1"
    macaroon, preimage, body = await buy(session, network, url)
    assert body["amount_msat"] == 2_000 and body["first"] == 1 and body["count"] == 1
    # The payment hash in the macaroon's identifier is the invoice's.
    ident = from_base64(macaroon).identifier
    assert ident[2:34] == hashlib.sha256(bytes.fromhex(preimage)).digest()

    async with session.get(url, headers=auth(macaroon, preimage)) as resp:
        assert resp.status == 200
        data = await resp.read()
    assert data == uploaded.sealed[1]
    opened = FileDecryptor(uploaded.key, uploaded.encryptor.header).open(1, data)
    assert opened == uploaded.plaintext[CHUNK : 2 * CHUNK]
    # Old clients say LSAT; the same token works, and works again (until it expires).
    async with session.get(url, headers=auth(macaroon, preimage, "LSAT")) as resp:
        assert resp.status == 200


async def test_range_token_opens_exactly_its_range_and_costs_price_times_count(
    session: aiohttp.ClientSession, network: Network, gateway_url: str, uploaded: Uploaded
) -> None:
    base = f"{gateway_url}/v1/files/{uploaded.file_id}/chunks"
    macaroon, preimage, body = await buy(session, network, f"{base}/1?count=2")
    assert (body["first"], body["count"], body["amount_msat"]) == (1, 2, 4_000)
    for index in (1, 2):
        async with session.get(f"{base}/{index}", headers=auth(macaroon, preimage)) as resp:
            assert resp.status == 200
            assert await resp.read() == uploaded.sealed[index]
    for index in (0, 3):
        async with session.get(f"{base}/{index}", headers=auth(macaroon, preimage)) as resp:
            assert resp.status == 402
            assert "token refused" in (await resp.json())["detail"]


async def test_count_is_clipped_to_the_end_of_the_file(
    session: aiohttp.ClientSession, gateway_url: str, uploaded: Uploaded
) -> None:
    async with session.get(f"{gateway_url}/v1/files/{uploaded.file_id}/chunks/2?count=50") as r:
        body = await r.json()
    assert (body["first"], body["count"], body["amount_msat"]) == (2, 2, 4_000)


async def test_refused_tokens(
    session: aiohttp.ClientSession, network: Network, gateway_url: str, uploaded: Uploaded
) -> None:
    url = f"{gateway_url}/v1/files/{uploaded.file_id}/chunks/0"
    macaroon, preimage, _ = await buy(session, network, url)
    other = await upload_raw(session, gateway_url, random_bytes(CHUNK), chunk_size=CHUNK)
    m = from_base64(macaroon)
    tampered_caveats = tuple(
        c.replace(b"bitcache_chunks=0-0", b"bitcache_chunks=0-3") for c in m.caveats
    )
    assert tampered_caveats != m.caveats
    tampered = to_base64(Macaroon(m.location, m.identifier, tampered_caveats, m.signature))
    expired = to_base64(
        add_caveat(m, Caveat("bitcache_valid_until", str(int(time.time()) - 1)).encode())
    )
    cases = {
        "wrong preimage": (url, auth(macaroon, "00" * 32)),
        "other file": (
            f"{gateway_url}/v1/files/{other.file_id}/chunks/0",
            auth(macaroon, preimage),
        ),
        "tampered caveat": (url, auth(tampered, preimage)),
        "expired": (url, auth(expired, preimage)),
        "garbage": (url, {"Authorization": "L402 not-a-macaroon:zz"}),
    }
    for name, (target, headers) in cases.items():
        async with session.get(target, headers=headers) as resp:
            assert resp.status == 402, name
            body = await resp.json()
            assert body["type"].endswith("payment-required"), name
            assert preimage not in body["detail"], name
            assert len(resp.headers.getall("WWW-Authenticate")) == 2, name
    # The untouched token still works: refusals changed nothing.
    async with session.get(url, headers=auth(macaroon, preimage)) as resp:
        assert resp.status == 200


async def test_free_files_need_no_payment(session: aiohttp.ClientSession, gateway_url: str) -> None:
    up = await upload_raw(session, gateway_url, random_bytes(CHUNK), price_msat=0, chunk_size=CHUNK)
    async with session.get(f"{gateway_url}/v1/files/{up.file_id}/chunks/0") as resp:
        assert resp.status == 200
        assert await resp.read() == up.sealed[0]


async def test_a_run_is_its_chunks_back_to_back_for_a_token_covering_all_of_them(
    session: aiohttp.ClientSession, network: Network, gateway_url: str, uploaded: Uploaded
) -> None:
    base = f"{gateway_url}/v1/files/{uploaded.file_id}/chunks"
    async with session.get(f"{base}?first=1&last=3") as resp:  # no token: the run's price
        assert resp.status == 402
        body = await resp.json()
    assert (body["first"], body["count"], body["amount_msat"]) == (1, 3, 6_000)
    macaroon, preimage, _ = await buy(session, network, f"{base}/1?count=2")  # chunks 1-2
    async with session.get(f"{base}?first=1&last=2", headers=auth(macaroon, preimage)) as resp:
        assert resp.status == 200
        assert resp.headers["Bitcache-Chunks"] == "1-2"
        assert resp.headers["Content-Length"] == str(len(uploaded.sealed[1] + uploaded.sealed[2]))
        assert await resp.read() == uploaded.sealed[1] + uploaded.sealed[2]
    for first, last in ((0, 2), (1, 3), (0, 0)):  # reaching outside the token, either side
        url = f"{base}?first={first}&last={last}"
        async with session.get(url, headers=auth(macaroon, preimage)) as resp:
            assert resp.status == 402, (first, last)
            assert "token refused" in (await resp.json())["detail"]
    # The owner needs no token; the last chunk is the short one.
    async with session.get(f"{base}?first=0&last=3", headers=bearer(uploaded.api_key)) as resp:
        assert resp.status == 200
        assert await resp.read() == b"".join(uploaded.sealed)


async def test_a_free_file_comes_in_runs_and_runs_are_counted_as_served(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(network, tmp_path / "gw", metrics_public=True)
    async with serve(config) as url:
        up = await upload_raw(session, url, random_bytes(5 * CHUNK), price_msat=0, chunk_size=CHUNK)

        async def served_bytes() -> float:
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("bitcache_bytes_served_total{")
            )

        before = await served_bytes()
        async with session.get(f"{url}/v1/files/{up.file_id}/chunks?first=0&last=4") as resp:
            assert resp.status == 200
            assert await resp.read() == b"".join(up.sealed)
        assert await served_bytes() - before == len(b"".join(up.sealed))


async def test_bad_input_gets_problem_bodies_and_changes_nothing(
    session: aiohttp.ClientSession, gateway_url: str, uploaded: Uploaded
) -> None:
    fid = uploaded.file_id
    cases = [
        ("GET", "/v1/files/not-an-id", None, 400),
        ("GET", "/v1/files/" + "a" * 26, None, 404),
        ("GET", f"/v1/files/{fid}/chunks/99", None, 404),
        ("GET", f"/v1/files/{fid}/chunks/x1", None, 400),
        ("GET", f"/v1/files/{fid}/chunks/0?count=0", None, 400),
        ("GET", f"/v1/files/{fid}/chunks?last=1", None, 400),  # runs: first missing
        ("GET", f"/v1/files/{fid}/chunks?first=2&last=1", None, 400),
        ("GET", f"/v1/files/{fid}/chunks?first=0&last=64", None, 400),  # 65 chunks
        ("GET", f"/v1/files/{fid}/chunks?first=%D9%A3&last=3", None, 400),  # Arabic-Indic 3
        ("GET", f"/v1/files/{fid}/chunks?first=0&last=4", None, 404),  # past the last chunk
        ("POST", "/v1/files", b"{not json", 400),
        ("POST", "/v1/files", b'{"header": {}, "manifest": "AA"}', 400),
        ("PUT", f"/v1/files/{fid}/chunks/0", b"short", 422),
        ("PUT", f"/v1/files/{fid}/chunks/0", uploaded.sealed[1], 409),
        ("PATCH", f"/v1/files/{fid}", None, 405),
        ("GET", "/nowhere", None, 404),
    ]
    owner = bearer(uploaded.api_key)
    for method, path, data, status in cases:
        async with session.request(
            method,
            gateway_url + path,
            data=data,
            headers=owner if method in ("PUT", "POST") else {},
        ) as resp:
            assert resp.status == status, (method, path, await resp.text())
            body = await resp.json(content_type=None)
            assert {"type", "title", "detail"} <= body.keys(), (method, path)
    # Uploading needs an account.
    async with session.put(f"{gateway_url}/v1/files/{fid}/chunks/0", data=b"x") as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with session.get(f"{gateway_url}/v1/files/{fid}") as resp:
        state = await resp.json()
    assert state["state"] == "complete" and state["chunks_present"] == 4


async def test_incomplete_upload_resumes_and_cannot_be_downloaded_early(
    session: aiohttp.ClientSession, gateway_url: str
) -> None:
    up = await upload_raw(
        session, gateway_url, random_bytes(2 * CHUNK), chunk_size=CHUNK, complete=False
    )
    async with session.get(f"{gateway_url}/v1/files/{up.file_id}/chunks/0") as resp:
        assert resp.status == 409
    # Re-putting identical bytes is idempotent.
    async with session.put(
        f"{gateway_url}/v1/files/{up.file_id}/chunks/0",
        data=up.sealed[0],
        headers=bearer(up.api_key),
    ) as resp:
        assert resp.status == 200
    async with session.post(
        f"{gateway_url}/v1/files/{up.file_id}/complete", headers=bearer(up.api_key)
    ) as resp:
        assert resp.status == 200


async def test_health_reports_lnd_kubo_and_the_database(
    session: aiohttp.ClientSession, gateway_url: str
) -> None:
    async with session.get(f"{gateway_url}/v1/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["lnd"]["ok"] and body["lnd"]["alias"] == "gateway"
    # On the cluster backend (make test-scale) the store's version is the cluster's.
    assert body["kubo"]["ok"] and body["kubo"]["version"].startswith(("0.42", "ipfs-cluster"))
    # SQLite by default; PostgreSQL under make test-scale (its outage: test_postgres.py).
    engine = "postgresql" if os.environ.get(postgres.URL_ENV) else "sqlite"
    assert body["database"] == {"ok": True, "engine": engine}


async def test_dependency_outage_gives_503_then_recovers(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    node = network.node("gateway")
    lnd_proxy = TcpProxy("127.0.0.1", node.rest_port)
    await lnd_proxy.start()
    base = gateway_config(network, tmp_path)
    update, storage = await proxied_storage(network, base)
    update["lnd"] = base.lnd.model_copy(update={"rest_url": f"https://127.0.0.1:{lnd_proxy.port}"})
    config = base.model_copy(update=update)
    async with serve(config) as url:
        up = await upload_raw(session, url, random_bytes(CHUNK), chunk_size=CHUNK)
        chunk_url = f"{url}/v1/files/{up.file_id}/chunks/0"

        await lnd_proxy.cut()
        async with session.get(chunk_url) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"
            assert (await resp.json())["type"].endswith("dependency-unavailable")
        async with session.get(f"{url}/v1/health") as resp:
            assert resp.status == 503 and not (await resp.json())["lnd"]["ok"]
        await lnd_proxy.restore()
        async with session.get(chunk_url) as resp:
            assert resp.status == 402

        for proxy in storage:
            await proxy.cut()
        async with session.put(
            f"{url}/v1/files/{up.file_id}/chunks/0", data=up.sealed[0], headers=bearer(up.api_key)
        ) as r:
            assert r.status == 503 and "Retry-After" in r.headers
        for proxy in storage:
            await proxy.restore()
        async with session.put(
            f"{url}/v1/files/{up.file_id}/chunks/0", data=up.sealed[0], headers=bearer(up.api_key)
        ) as r:
            assert r.status == 200
    for proxy in [lnd_proxy, *storage]:
        await proxy.cut()


async def test_preimage_is_handed_to_the_token_holder_once_paid(
    session: aiohttp.ClientSession, network: Network, gateway_url: str, uploaded: Uploaded
) -> None:
    url = f"{gateway_url}/v1/files/{uploaded.file_id}/chunks/0"
    async with session.get(url) as resp:
        challenge = await resp.json()
    ask = f"{gateway_url}/v1/l402/preimage"
    async with session.post(ask, json={"macaroon": challenge["macaroon"]}) as resp:
        assert resp.status == 202 and resp.headers["Retry-After"] == "1"
    m = from_base64(challenge["macaroon"])
    forged = to_base64(Macaroon(m.location, m.identifier, m.caveats, bytes(32)))
    async with session.post(ask, json={"macaroon": forged}) as resp:
        assert resp.status == 403
    payment = await network.node("payer").client.pay_invoice(challenge["invoice"], 1_000)
    async with session.post(ask, json={"macaroon": challenge["macaroon"]}) as resp:
        assert resp.status == 200
        assert (await resp.json())["preimage"] == payment.preimage.hex()
    async with session.get(url, headers=auth(challenge["macaroon"], payment.preimage.hex())) as r:
        assert r.status == 200


async def test_no_secret_reaches_the_logs(
    session: aiohttp.ClientSession,
    network: Network,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Everything at DEBUG, and a gateway started after that, so its access log is on too.
    caplog.set_level(logging.DEBUG)
    async with serve(gateway_config(network, tmp_path)) as gateway:
        up = await upload_raw(session, gateway, random_bytes(CHUNK), chunk_size=CHUNK)
        url = f"{gateway}/v1/files/{up.file_id}/chunks/0"
        macaroon, preimage, _ = await buy(session, network, url)
        for headers in (auth(macaroon, preimage), auth(macaroon, "11" * 32)):
            async with session.get(url, headers=headers) as resp:
                await resp.read()
    # The access log saw these requests, so the check below looks at real log lines.
    assert f"GET /v1/files/{up.file_id}/chunks/0" in caplog.text
    secret_key = (tmp_path / "token-secret").read_bytes()
    for secret in (macaroon, preimage, up.api_key, up.key.hex(), secret_key.hex()):
        assert secret not in caplog.text


async def test_a_client_flooding_402s_is_slowed_but_paid_downloads_are_not(
    session: aiohttp.ClientSession, network: Network, tmp_path: Path
) -> None:
    config = gateway_config(network, tmp_path, invoice_burst=2, invoice_rate_per_s=0.1)
    async with serve(config) as url:
        up = await upload_raw(session, url, random_bytes(CHUNK), chunk_size=CHUNK)
        chunk = f"{url}/v1/files/{up.file_id}/chunks/0"
        macaroon, preimage, _ = await buy(session, network, chunk)  # invoice 1 of 2
        async with session.get(chunk) as resp:  # invoice 2 of 2
            assert resp.status == 402
        async with session.get(chunk) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["type"].endswith("too-many-invoices")
        for _ in range(5):  # the paid token keeps working: downloads are never limited
            async with session.get(chunk, headers=auth(macaroon, preimage)) as resp:
                assert resp.status == 200
