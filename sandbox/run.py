"""`bitcache sandbox`: the regtest network plus a gateway on it, ready to upload and pay.

Creates an account on the gateway and writes the client config (gateway URL, API key, the
network's `payer` LND node, and a small prepaid credit) where `bitcache` looks by default,
so `bitcache upload` and `bitcache get` work from another terminal at once. Ctrl-C stops
everything.

The saved config holds credit (`credit_msat`) because that is how a client should pay: the
first paid `bitcache get` buys it with one Lightning payment, and every range after that,
in that download and the next ones, is paid by a debit at the gateway, so downloads do not
wait for payments (README, "Speed"). The amount is small (regtest sats, 250 chunks at the
sandbox's default price) and nothing else changes: without credit left the client pays
invoices as before. `sandbox_client_config`, used by tests and benches, holds none, so
they choose.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from client.config import ClientConfig, LndConnection, default_config_path, save_config
from client.errors import ClientError
from gateway.config import GatewayConfig, LndSettings
from gateway.server import serve
from regtest.network import Network

# The credit the sandbox's saved client config buys at its first paid download: 500 sat,
# 250 chunks at the default 2 000 msat; topped up in the background below a quarter.
SANDBOX_CREDIT_MSAT = 500_000


def sandbox_gateway_config(
    net: Network, data_dir: Path, port: int, **overrides: Any
) -> GatewayConfig:
    """A gateway on 127.0.0.1:port using the network's `gateway` LND node and its kubo."""
    node = net.node("gateway")
    assert net.kubo is not None
    values: dict[str, Any] = {
        "port": port,
        "data_dir": data_dir,
        "kubo_api_url": net.kubo.api_url,
        "lnd": LndSettings(
            rest_url=node.rest_url, tls_cert=node.tls_cert, macaroon=node.gateway_macaroon
        ),
    }
    return GatewayConfig(**(values | overrides))


def sandbox_client_config(
    net: Network, gateway_url: str, api_key: str | None = None
) -> ClientConfig:
    """A client that pays with the network's `payer` node."""
    node = net.node("payer")
    return ClientConfig(
        gateway_url=gateway_url,
        api_key=api_key,
        lnd=LndConnection(
            rest_url=node.rest_url, tls_cert=node.tls_cert, macaroon=node.admin_macaroon
        ),
    )


async def _create_account(gateway_url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway_url}/v1/accounts") as resp,
    ):
        body = await resp.json()
    return str(body["api_key"])


async def _run(port: int, config_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Network.start() as net:
        config = sandbox_gateway_config(net, net.root / "gateway", port)
        async with contextlib.AsyncExitStack() as stack:
            try:
                url = await stack.enter_async_context(serve(config))
            except OSError as exc:
                raise ClientError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
            api_key = await _create_account(url)
            client = sandbox_client_config(net, url, api_key)
            save_config(client.model_copy(update={"credit_msat": SANDBOX_CREDIT_MSAT}), config_path)
            kubo = net.kubo.api_url if net.kubo else "?"
            print(
                f"\nBitcache sandbox ready ({net.ready_seconds:.0f}s for the network)\n"
                f"  gateway  {url}   (health: {url}/v1/health)\n"
                f"  client   {config_path}: this gateway, a new account, the `payer` node,\n"
                f"           {SANDBOX_CREDIT_MSAT // 1000} sat of prepaid credit per gateway\n"
                f"  kubo     {kubo}\n"
                f"  state    {net.root}\n\n"
                "In another terminal (after `. .venv/bin/activate`):\n"
                "  bitcache upload FILE      # encrypts, uploads, prints a share link\n"
                "  bitcache get LINK         # pays from prepaid credit (bought once over\n"
                "                            #   Lightning), decrypts\n"
                "  bitcache account usage    # quota, earnings\n\n"
                "Ctrl-C stops everything.",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            print("stopping…", file=sys.stderr)


def run(port: int = 8402, config_path: Path | None = None) -> int:
    asyncio.run(_run(port, config_path or default_config_path()))
    return 0
