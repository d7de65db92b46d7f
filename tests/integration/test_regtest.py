"""The regtest network itself: real payments move real balances; kubo stores bytes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from regtest.network import Network, wait_until

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
