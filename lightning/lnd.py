"""An async client for LND's REST API (lnd v0.21), over aiohttp.

Only the calls Bitcache uses. REST encodes bytes fields as base64 and 64-bit integers as
strings; this module turns both into Python types so nothing above it sees the wire form.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from lightning.errors import LightningError, LightningUnavailable, PaymentFailed, StreamIdle
from lightning.models import (
    DecodedInvoice,
    Invoice,
    InvoiceState,
    NodeInfo,
    Payment,
    PaymentStatus,
)
from lightning.node import LightningNode
from rest.observe import CallObserver, call_name, observed
from rest.session import LazySession, pinned_tls

_STATES = {
    "OPEN": InvoiceState.OPEN,
    "SETTLED": InvoiceState.SETTLED,
    "CANCELED": InvoiceState.CANCELED,
    "ACCEPTED": InvoiceState.ACCEPTED,
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    if not text:
        return b""
    return base64.b64decode(
        text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None
    )


def _int(value: Any) -> int:
    return int(value or 0)


def _segment(value: str) -> str:
    """A value as exactly one URL path segment of the same request.

    Percent-encoding '/', '?', '#' and '%' keeps the value in its segment (yarl would
    decode "%2e%2e" and resolve it as ".."); "." and ".." stay dot segments however they
    are written, so they are refused."""
    if value in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be a path segment")
    return urllib.parse.quote(value, safe="")


def invoice_from_json(data: Mapping[str, Any]) -> Invoice:
    """Builds an Invoice from LND's REST `lnrpc.Invoice` JSON."""
    preimage = _unb64(data.get("r_preimage"))
    return Invoice(
        payment_hash=_unb64(data.get("r_hash")),
        bolt11=str(data.get("payment_request", "")),
        amount_msat=_int(data.get("value_msat")),
        state=_STATES.get(str(data.get("state", "OPEN")), InvoiceState.OPEN),
        add_index=_int(data.get("add_index")),
        settle_index=_int(data.get("settle_index")),
        amount_paid_msat=_int(data.get("amt_paid_msat")),
        preimage=preimage or None,
    )


class LndRestClient:
    """One LND node's REST API. Use as an async context manager, or call close().

    ``observe``, when given, hears of every call (``GET /v1/invoice``, seconds, ok): a
    stream is one call, timed until it ends."""

    def __init__(
        self,
        url: str,
        tls_cert: Path | str,
        macaroon: Path | str | bytes,
        timeout: float = 30.0,
        observe: CallObserver | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._observe = observe
        self._tls_cert = Path(tls_cert)
        self._macaroon = macaroon
        self._http = LazySession(
            aiohttp.ClientTimeout(total=timeout, sock_connect=5),
            tls=lambda: pinned_tls(self._tls_cert),
        )
        self._network: str | None = None

    async def __aenter__(self) -> LndRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    def _macaroon_hex(self) -> str:
        # Read on use rather than at construction so a node restarted later (new
        # files on disk) is picked up without rebuilding the client.
        value = self._macaroon
        if isinstance(value, bytes):
            return value.hex()
        path = Path(value)
        if path.is_file():
            return path.read_bytes().hex()
        return str(value)

    def _ensure_session(self) -> aiohttp.ClientSession:
        try:
            return self._http.get()
        except (OSError, ssl.SSLError) as exc:
            raise LightningUnavailable(f"cannot read LND TLS certificate: {exc}") from exc

    def _headers(self) -> dict[str, str]:
        return {"Grpc-Metadata-macaroon": self._macaroon_hex()}

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        with observed(self._observe, call_name(method, path), (LightningError,)):
            return await self._request_once(method, path, body, params)

    async def _request_once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        session = self._ensure_session()
        try:
            async with session.request(
                method, self.url + path, json=body, params=params, headers=self._headers()
            ) as resp:
                text = await resp.text()
                data = json.loads(text) if text else {}
                if resp.status >= 400:
                    message = data.get("message") or data.get("error") or text[:200]
                    if resp.status in (502, 503, 504) or "not yet ready" in str(message):
                        raise LightningUnavailable(f"LND {path}: {message}")
                    raise LightningError(f"LND {path}: {message}")
                return dict(data)
        except (
            TimeoutError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            ssl.SSLError,
        ) as exc:
            raise LightningUnavailable(f"LND at {self.url} unreachable: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise LightningError(f"LND {path}: answer is not JSON") from exc

    async def _stream(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        total_s: float | None = None,
        idle_s: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields the `result` objects of a REST server-streaming call (JSON lines);
        StreamIdle if nothing (not even the response headers) comes for `idle_s`."""
        with observed(self._observe, call_name(method, path), (LightningError,)):
            async for item in self._stream_once(method, path, body, params, total_s, idle_s):
                yield item

    async def _stream_once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        total_s: float | None,
        idle_s: float | None,
    ) -> AsyncIterator[dict[str, Any]]:
        session = self._ensure_session()
        t = aiohttp.ClientTimeout(total=total_s, sock_connect=5, sock_read=idle_s)
        try:
            async with session.request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers=self._headers(),
                timeout=t,
            ) as resp:
                if resp.status >= 400:
                    raise LightningError(
                        f"LND {path}: HTTP {resp.status}: {(await resp.text())[:200]}"
                    )
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError as exc:  # a line cut short, or not JSON at all
                        raise LightningError(f"LND {path}: a stream message is not JSON") from exc
                    if "error" in item:
                        err = item["error"]
                        raise LightningError(f"LND {path}: {err.get('message', err)}")
                    yield dict(item.get("result", item))
        except aiohttp.SocketTimeoutError as exc:
            raise StreamIdle(f"LND {path}: nothing for {idle_s} s") from exc
        except (
            TimeoutError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,  # the connection dropped in the middle of a message
            ssl.SSLError,
        ) as exc:
            raise LightningUnavailable(f"LND at {self.url} unreachable: {exc!r}") from exc

    # --- node -----------------------------------------------------------------------

    async def get_info(self) -> NodeInfo:
        data = await self._request("GET", "/v1/getinfo")
        return NodeInfo(
            pubkey=str(data.get("identity_pubkey", "")),
            alias=str(data.get("alias", "")),
            block_height=_int(data.get("block_height")),
            synced_to_chain=bool(data.get("synced_to_chain", False)),
            num_active_channels=_int(data.get("num_active_channels")),
        )

    async def network(self) -> str:
        """The network the node runs on ("mainnet", "regtest", …), asked once: a node
        does not change networks without a restart on another data directory."""
        if self._network is None:
            chains = (await self._request("GET", "/v1/getinfo")).get("chains") or [{}]
            self._network = str(chains[0].get("network", ""))
        return self._network

    # --- invoices -------------------------------------------------------------------

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int = 3600) -> Invoice:
        data = await self._request(
            "POST",
            "/v1/invoices",
            {"value_msat": str(amount_msat), "memo": memo, "expiry": str(expiry_s)},
        )
        return Invoice(
            payment_hash=_unb64(data["r_hash"]),
            bolt11=str(data["payment_request"]),
            amount_msat=amount_msat,
            add_index=_int(data.get("add_index")),
        )

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice:
        return invoice_from_json(
            await self._request("GET", f"/v1/invoice/{_segment(payment_hash.hex())}")
        )

    async def subscribe_invoices(
        self, add_index: int = 0, settle_index: int = 0, idle_s: float | None = None
    ) -> AsyncIterator[Invoice]:
        """Every invoice added or settled after the given indexes, then live updates;
        StreamIdle after `idle_s` without a message (LND sends none on an idle node)."""
        params = {"add_index": str(add_index), "settle_index": str(settle_index)}
        async for item in self._stream(
            "GET", "/v1/invoices/subscribe", params=params, idle_s=idle_s
        ):
            yield invoice_from_json(item)

    # --- payments -------------------------------------------------------------------

    async def pay_invoice(self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60) -> Payment:
        """Pays and waits for the final outcome (routerrpc.SendPaymentV2)."""
        body = {
            "payment_request": bolt11,
            "timeout_seconds": timeout_s,
            "fee_limit_msat": str(fee_limit_msat),
            "no_inflight_updates": True,
        }
        last: dict[str, Any] = {}
        async for update in self._stream("POST", "/v2/router/send", body, total_s=timeout_s + 30):
            last = update
            status = update.get("status")
            if status == "SUCCEEDED":
                return Payment(
                    payment_hash=bytes.fromhex(update["payment_hash"]),
                    preimage=bytes.fromhex(update["payment_preimage"]),
                    amount_msat=_int(update.get("value_msat")),
                    fee_msat=_int(update.get("fee_msat")),
                )
            if status == "FAILED":
                raise PaymentFailed(f"payment failed: {update.get('failure_reason', 'unknown')}")
        raise LightningError(f"payment stream ended without a final state: {last.get('status')}")

    async def decode_invoice(self, bolt11: str) -> DecodedInvoice:
        data = await self._request("GET", f"/v1/payreq/{_segment(bolt11)}")
        return DecodedInvoice(
            payment_hash=bytes.fromhex(str(data["payment_hash"])),
            amount_msat=_int(data.get("num_msat")),
            destination=str(data.get("destination", "")),
            expires_at=_int(data.get("timestamp")) + _int(data.get("expiry")),
        )

    async def track_payment(self, payment_hash: bytes, wait: bool = False) -> PaymentStatus:
        """The current state of an outgoing payment ("in_flight" at once for one still
        under way), or with `wait` its final state; "unknown" if never initiated."""
        try:
            async for update in self._stream(
                "GET",
                # Bytes in a REST path are base64 (URL-safe): hex is read as 48 bytes.
                f"/v2/router/track/{_segment(base64.urlsafe_b64encode(payment_hash).decode())}",
                # Without in-flight updates the stream says nothing until the payment ends.
                params={"no_inflight_updates": "true" if wait else "false"},
                total_s=150 if wait else 30,
            ):
                status = str(update.get("status"))
                if status == "SUCCEEDED":
                    return PaymentStatus(
                        "succeeded",
                        _int(update.get("fee_msat")),
                        bytes.fromhex(update["payment_preimage"]),
                    )
                if status == "FAILED":
                    return PaymentStatus("failed", 0, None)
                return PaymentStatus("in_flight", 0, None)
        except LightningUnavailable:
            raise
        except LightningError as exc:
            if "not found" in str(exc) or "isn't initiated" in str(exc):
                return PaymentStatus("unknown", 0, None)
            raise
        return PaymentStatus("in_flight", 0, None)

    # --- wallet and channels (used by the regtest network and operators) -------------

    async def new_address(self) -> str:
        data = await self._request("GET", "/v1/newaddress", params={"type": "WITNESS_PUBKEY_HASH"})
        return str(data["address"])

    async def wallet_balance_sat(self) -> int:
        return _int((await self._request("GET", "/v1/balance/blockchain")).get("confirmed_balance"))

    async def channel_balance_msat(self) -> tuple[int, int]:
        """(local, remote) balance across open channels, in msat."""
        data = await self._request("GET", "/v1/balance/channels")
        local = _int((data.get("local_balance") or {}).get("msat"))
        remote = _int((data.get("remote_balance") or {}).get("msat"))
        return local, remote

    async def connect_peer(self, pubkey: str, host: str) -> None:
        try:
            await self._request(
                "POST", "/v1/peers", {"addr": {"pubkey": pubkey, "host": host}, "perm": False}
            )
        except LightningError as exc:
            if "already connected" not in str(exc):
                raise

    async def open_channel(self, pubkey: str, local_sat: int, push_sat: int) -> str:
        """Opens a channel and returns its funding txid (hex, display order)."""
        data = await self._request(
            "POST",
            "/v1/channels",
            {
                "node_pubkey": _b64(bytes.fromhex(pubkey)),
                "local_funding_amount": str(local_sat),
                "push_sat": str(push_sat),
            },
        )
        txid = _unb64(data.get("funding_txid_bytes"))
        return txid[::-1].hex()

    async def list_channels(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "/v1/channels")).get("channels", []))


# Checked by mypy: the REST adapter is a LightningNode.
_: type[LightningNode] = LndRestClient
