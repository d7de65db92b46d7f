"""Account operations: create, usage, plans, buying a plan, withdrawing earnings."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from client.api import BitcacheClient
from client.errors import ClientError

PLAN_WAIT_S = 60


async def create(client: BitcacheClient) -> dict[str, Any]:
    """A new account; the answer holds its API key, shown this once."""
    return await client.call("POST", "/v1/accounts", ok=(201,))


async def usage(client: BitcacheClient) -> dict[str, Any]:
    _require_key(client)
    return await client.call("GET", "/v1/account")


async def plans(client: BitcacheClient) -> list[dict[str, Any]]:
    return list((await client.call("GET", "/v1/plans"))["plans"])


async def buy(client: BitcacheClient, plan_id: str) -> dict[str, Any]:
    """Buys a plan with the configured node; returns the usage once the quota has risen."""
    _require_key(client)
    if client.payer is None:
        raise ClientError("buying a plan needs a Lightning node: set `lnd` in the config")
    offer = await client.call("POST", "/v1/account/plans", json_body={"plan_id": plan_id})
    await client.payer.pay(str(offer["invoice"]), int(offer["amount_msat"]))
    # The gateway books the payment from its node's invoice stream, a moment later.
    deadline = time.monotonic() + PLAN_WAIT_S
    while time.monotonic() < deadline:
        current = await usage(client)
        if any(p["plan_id"] == plan_id and p["active"] for p in current["plans"]):
            return current
        await asyncio.sleep(0.5)
    raise ClientError("paid, but the gateway has not confirmed the plan yet; check `usage`")


async def withdraw(client: BitcacheClient, amount_msat: int) -> dict[str, Any]:
    """Withdraws to an invoice made by the configured node (its own earnings address)."""
    _require_key(client)
    lnd = client.lightning_node()
    if lnd is None:
        raise ClientError("withdrawing needs a Lightning node: set `lnd` in the config")
    invoice = await lnd.create_invoice(amount_msat, "Bitcache withdrawal", expiry_s=600)
    # One key per attempt: a retry of this call (by _request) cannot pay twice.
    key = "cli-" + secrets.token_hex(16)
    return await client.call(
        "POST",
        "/v1/account/withdrawals",
        json_body={"invoice": invoice.bolt11},
        headers={"Idempotency-Key": key},
        ok=(200, 202),
    )


def _require_key(client: BitcacheClient) -> None:
    if client.config.api_key is None:
        raise ClientError("no account configured: run `bitcache account create` first")
