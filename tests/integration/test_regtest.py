"""The regtest network itself: real payments move real balances; kubo stores bytes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from lightning.errors import LightningError, PaymentFailed
from lightning.lnd import LndRestClient
from lightning.models import InvoiceState
from regtest.lnd_admin import RegtestLndClient
from regtest.network import Network, router_fee_msat, wait_until

pytestmark = pytest.mark.integration


async def test_invoice_paid_by_payer_moves_both_balances_by_exactly_the_amount(
    network: Network,
) -> None:
    gateway, payer = network.node("gateway").client, network.node("payer").client
    await network.wait_idle()
    gw_before, _ = await gateway.channel_balance_msat()
    payer_before, _ = await payer.channel_balance_msat()
    amount_msat = 123_456

    invoice = await gateway.create_invoice(amount_msat, "regtest check")
    payment = await payer.pay_invoice(invoice.bolt11, fee_limit_msat=10_000)

    assert payment.payment_hash == invoice.payment_hash
    settled = await gateway.lookup_invoice(invoice.payment_hash)
    assert settled.state == "settled"
    assert settled.amount_paid_msat == amount_msat
    # Balances are final once the commitment dance ends, a moment after the payment returns.
    await network.wait_idle()
    gw_after, _ = await gateway.channel_balance_msat()
    payer_after, _ = await payer.channel_balance_msat()
    assert gw_after - gw_before == amount_msat
    # A direct channel has no routing fee.
    assert payment.fee_msat == 0
    assert payer_before - payer_after == amount_msat


async def _local_msat(network: Network, *names: str) -> list[int]:
    return [(await network.node(n).client.channel_balance_msat())[0] for n in names]


@pytest.mark.parametrize(
    ("payer", "payee", "amount_msat"),
    [("far_payer", "gateway", 2_345_678), ("gateway", "far_payer", 1_234_567)],
)
async def test_routed_payment_pays_exactly_the_fee_lnd_reports(
    network: Network, payer: str, payee: str, amount_msat: int
) -> None:
    # far_payer's only channel is to router, so both directions must go through it.
    names = (payer, "router", payee)
    await network.wait_idle()
    before = await _local_msat(network, *names)
    fee = router_fee_msat(amount_msat)
    assert fee > 1_000  # the base fee and the proportional part both count

    invoice = await network.node(payee).client.create_invoice(amount_msat, "routed")
    payment = await network.node(payer).client.pay_invoice(invoice.bolt11, fee_limit_msat=fee)

    assert payment.fee_msat == fee
    settled = await network.node(payee).client.lookup_invoice(invoice.payment_hash)
    assert settled.amount_paid_msat == amount_msat
    await network.wait_idle()
    after = await _local_msat(network, *names)
    assert before[0] - after[0] == amount_msat + payment.fee_msat  # payer: amount + fee
    assert after[1] - before[1] == payment.fee_msat  # router keeps exactly the fee
    assert after[2] - before[2] == amount_msat  # payee: the amount, no more


async def test_routed_payment_with_a_fee_limit_below_the_fee_fails_and_moves_nothing(
    network: Network,
) -> None:
    amount_msat = 3_000_000
    await network.wait_idle()
    before = await _local_msat(network, "far_payer", "router", "gateway")
    invoice = await network.node("gateway").client.create_invoice(amount_msat, "too cheap")

    with pytest.raises(PaymentFailed):
        await network.node("far_payer").client.pay_invoice(
            invoice.bolt11, fee_limit_msat=router_fee_msat(amount_msat) - 1
        )

    assert (await network.node("gateway").client.lookup_invoice(invoice.payment_hash)).state == (
        InvoiceState.OPEN
    )
    await network.wait_idle()
    assert await _local_msat(network, "far_payer", "router", "gateway") == before


async def test_router_is_the_only_way_from_far_payer_to_the_gateway(network: Network) -> None:
    routes = await network.node("far_payer").client.query_routes(
        network.node("gateway").pubkey, 1_000_000
    )
    assert routes
    assert all(r.hop_pubkeys[0] == network.router_pubkey for r in routes)
    assert routes[0].total_fees_msat == router_fee_msat(1_000_000)
    # The direct channel still wins for the payer: no fee (asserted above too).
    direct = await network.node("payer").client.query_routes(
        network.node("gateway").pubkey, 1_000_000
    )
    assert direct[0].hop_pubkeys == (network.node("gateway").pubkey,)
    assert direct[0].total_fees_msat == 0


async def test_gateway_macaroon_does_what_the_gateway_needs(network: Network) -> None:
    node = network.node("gateway")
    assert node.gateway_macaroon.read_bytes() != node.admin_macaroon.read_bytes()
    payer = network.node("payer").client
    async with LndRestClient(node.rest_url, node.tls_cert, node.gateway_macaroon) as gateway:
        assert (await gateway.get_info()).pubkey == node.pubkey  # info:read

        # invoices:write, then invoices:read through the stream and by lookup.
        invoice = await gateway.create_invoice(7_000, "least privilege")
        seen: list[bytes] = []

        async def follow() -> None:
            # settle_index=1 replays every later settlement, so ours is seen whether it
            # settles before or after the stream is set up.
            async for item in gateway.subscribe_invoices(settle_index=1):
                if item.payment_hash == invoice.payment_hash and item.state == InvoiceState.SETTLED:
                    seen.append(item.payment_hash)
                    return

        watcher = asyncio.create_task(follow())
        try:
            await payer.pay_invoice(invoice.bolt11, fee_limit_msat=0)
            await asyncio.wait_for(watcher, 20)
        finally:
            watcher.cancel()
        assert seen == [invoice.payment_hash]
        assert (await gateway.lookup_invoice(invoice.payment_hash)).amount_paid_msat == 7_000

        # offchain:read (decode, track) and offchain:write (pay): a withdrawal's calls.
        to_pay = await payer.create_invoice(5_000, "withdrawal")
        decoded = await gateway.decode_invoice(to_pay.bolt11)
        assert decoded.amount_msat == 5_000
        assert decoded.destination == network.node("payer").pubkey
        payment = await gateway.pay_invoice(to_pay.bolt11, fee_limit_msat=0)
        assert payment.payment_hash == to_pay.payment_hash
    tracker = RegtestLndClient(node.rest_url, node.tls_cert, node.gateway_macaroon)
    async with tracker:
        assert await tracker.payment_status(to_pay.payment_hash) == "SUCCEEDED"


async def test_lnd_client_tracks_a_payment_it_made(network: Network) -> None:
    # track_payment once sent the hash as hex, which LND read as 48 bytes and refused.
    gateway, payer = network.node("gateway").client, network.node("payer").client
    invoice = await payer.create_invoice(4_000, "track me")
    payment = await gateway.pay_invoice(invoice.bolt11, fee_limit_msat=0)
    status = await gateway.track_payment(invoice.payment_hash)
    assert status.state == "succeeded"
    assert status.preimage == payment.preimage
    assert (await gateway.track_payment(os.urandom(32))).state == "unknown"


async def test_gateway_macaroon_cannot_touch_funds_peers_or_macaroons(
    network: Network,
) -> None:
    node = network.node("gateway")
    payer = network.node("payer")
    # The same calls with the admin macaroon work (shown by the network's own start-up),
    # so each refusal below is the macaroon's doing.
    gateway = RegtestLndClient(node.rest_url, node.tls_cert, node.gateway_macaroon)
    async with gateway:
        refused: dict[str, Callable[[], Awaitable[object]]] = {
            "new address": gateway.new_address,
            "open channel": lambda: gateway.open_channel(payer.pubkey, 100_000, 0),
            "connect peer": lambda: gateway.connect_peer(payer.pubkey, payer.p2p_host),
            "wallet balance": gateway.wallet_balance_sat,
            "bake macaroon": lambda: gateway.bake_macaroon((("onchain", "write"),)),
        }
        for what, call in refused.items():
            with pytest.raises(LightningError) as info:
                await call()
            assert "permission denied" in str(info.value), what


async def test_kubo_add_then_cat_round_trips_bytes(network: Network) -> None:
    assert network.kubo is not None
    data = os.urandom(3 * 1024 * 1024 + 17)
    url = network.kubo.api_url
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="blob")
        async with session.post(f"{url}/api/v0/add?cid-version=1", data=form) as resp:
            assert resp.status == 200
            cid = (await resp.json())["Hash"]
        async with session.post(f"{url}/api/v0/cat", params={"arg": cid}) as resp:
            assert resp.status == 200
            assert await resp.read() == data


async def test_stopping_a_network_leaves_no_process() -> None:
    # A second, separate network beside the session one: ports must not collide.
    async with Network.start(verbose=False) as net:
        pids = [p.pid for p in net.processes()]
        assert len(pids) == 4 and all(pids)
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_command_line_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "network.json"
    cmd = [sys.executable, "-m", "regtest"]
    up = await asyncio.create_subprocess_exec(
        *cmd,
        "up",
        "--state-file",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def written() -> bool:
            return state.exists()

        await wait_until("`regtest up` to write its state file", written, 60, every_s=0.1)
        details = json.loads(state.read_text())
        assert details["lnd"]["payer"]["rest_url"].startswith("https://127.0.0.1:")
        assert details["kubo"]["api_url"].startswith("http://127.0.0.1:")

        async def run(*args: str) -> int:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                *args,
                "--state-file",
                str(state),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await proc.wait()

        assert await run("status") == 0
        assert await run("down") == 0
        assert await asyncio.wait_for(up.wait(), 30) == 0  # `up` itself ended cleanly
        assert await run("status") == 1
        for pid in details["pids"].values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
