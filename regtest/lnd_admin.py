"""The LND calls only the regtest network makes: fee policy, route queries, baking macaroons.

The gateway and client never need these, so they live here rather than in
lightning/lnd.py; the REST plumbing (TLS, macaroon header, errors) is inherited.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from lightning.lnd import LndRestClient

# Exactly what the gateway calls, as (entity, action), with the RPCs that need each:
#   info:read       GetInfo (health check)
#   invoices:read   LookupInvoice, SubscribeInvoices (settlement)
#   invoices:write  AddInvoice (chunk and plan invoices)
#   offchain:read   DecodePayReq, routerrpc.TrackPaymentV2 (withdrawals)
#   offchain:write  routerrpc.SendPaymentV2 (withdrawals)
# No onchain, address, peers or macaroon permission: the gateway never opens channels,
# touches on-chain funds or bakes macaroons.
GATEWAY_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("info", "read"),
    ("invoices", "read"),
    ("invoices", "write"),
    ("offchain", "read"),
    ("offchain", "write"),
)


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Route:
    """One route QueryRoutes found: the fee it would pay and the nodes it passes."""

    total_fees_msat: int
    hop_pubkeys: tuple[str, ...]


class RegtestLndClient(LndRestClient):
    """An LndRestClient with the operator calls the regtest network needs."""

    async def bake_macaroon(self, permissions: tuple[tuple[str, str], ...]) -> bytes:
        """A new macaroon granting exactly `permissions` (needs macaroon:generate)."""
        data = await self._request(
            "POST",
            "/v1/macaroon",
            {"permissions": [{"entity": e, "action": a} for e, a in permissions]},
        )
        return bytes.fromhex(str(data["macaroon"]))

    async def update_channel_policy(
        self, base_fee_msat: int, fee_rate_ppm: int, time_lock_delta: int = 40
    ) -> None:
        """Sets the forwarding fee of every channel of this node."""
        data = await self._request(
            "POST",
            "/v1/chanpolicy",
            {
                "global": True,
                "base_fee_msat": str(base_fee_msat),
                "fee_rate_ppm": fee_rate_ppm,
                "time_lock_delta": time_lock_delta,
            },
        )
        if data.get("failed_updates"):
            raise RuntimeError(f"channel policy update failed: {data['failed_updates']}")

    async def has_announced_edge(self, chan_id: str) -> bool:
        """True once the channel is in this node's graph with both ends' policies."""
        data = await self._request("GET", f"/v1/graph/edge/{chan_id}")
        return bool(data.get("node1_policy")) and bool(data.get("node2_policy"))

    async def query_routes(
        self, pubkey: str, amount_msat: int, fee_limit_msat: int = 1_000_000
    ) -> list[Route]:
        """Routes from this node to `pubkey` for `amount_msat`, as the graph knows them now.

        The fee limit is explicit: LND's default for small amounts is 100 % of the amount,
        which hides every route whose base fee exceeds a tiny amount.
        """
        data = await self._request(
            "GET",
            f"/v1/graph/routes/{pubkey}/0",
            params={"amt_msat": str(amount_msat), "fee_limit.fixed_msat": str(fee_limit_msat)},
        )
        return [
            Route(
                total_fees_msat=int(route.get("total_fees_msat") or 0),
                hop_pubkeys=tuple(str(hop.get("pub_key", "")) for hop in route.get("hops", [])),
            )
            for route in data.get("routes", [])
        ]

    async def payment_status(self, payment_hash: bytes) -> str:
        """The final status of an outgoing payment (routerrpc.TrackPaymentV2), e.g. SUCCEEDED.

        REST wants bytes in a path as base64url; LndRestClient.track_payment sends hex,
        which LND refuses ("invalid hash length of 48"), hence this one here.
        """
        path_hash = base64.urlsafe_b64encode(payment_hash).decode()
        async for update in self._stream(
            "GET",
            f"/v2/router/track/{path_hash}",
            params={"no_inflight_updates": "true"},
            total_s=30,
        ):
            return str(update.get("status", ""))
        return ""

    # Hold invoices (invoicesrpc): a payment to one stays in flight until the payee settles
    # or cancels it, which is how tests hold a withdrawal in flight.

    async def add_hold_invoice(
        self, payment_hash: bytes, amount_msat: int, memo: str, expiry_s: int = 3600
    ) -> str:
        """A hold invoice for `payment_hash`; returns its BOLT11. A payment to it stays in
        flight (ACCEPTED here) until settle_invoice() or cancel_invoice()."""
        data = await self._request(
            "POST",
            "/v2/invoices/hodl",
            {
                "hash": _b64e(payment_hash),
                "value_msat": str(amount_msat),
                "memo": memo,
                "expiry": str(expiry_s),
            },
        )
        return str(data["payment_request"])

    async def settle_invoice(self, preimage: bytes) -> None:
        await self._request("POST", "/v2/invoices/settle", {"preimage": _b64e(preimage)})

    async def cancel_invoice(self, payment_hash: bytes) -> None:
        await self._request("POST", "/v2/invoices/cancel", {"payment_hash": _b64e(payment_hash)})
