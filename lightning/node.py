"""LightningNode: the calls the gateway and the client make of a Lightning node.

One interface, several implementations: ``lnd.LndRestClient`` talks to LND's REST API,
``fake.FakeNode`` keeps invoices in memory for fast in-process tests. Nothing above this
package names an implementation except where it is chosen (the gateway's composition
root, the client's API, regtest). Channel and wallet calls are not here: only regtest and
operators use them, on LND directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from lightning.models import DecodedInvoice, Invoice, NodeInfo, Payment, PaymentStatus

__all__ = ["LightningNode"]


class LightningNode(Protocol):
    """A Lightning node we can invoice with, pay from, and watch.

    Failures are raised as ``lightning.errors``: ``LightningUnavailable`` when the node
    cannot be reached (retry later), ``PaymentFailed`` when a payment definitely failed,
    ``LightningError`` for any other refusal.
    """

    async def get_info(self) -> NodeInfo:
        """Who the node is and whether it is synced."""
        ...

    async def network(self) -> str:
        """The chain the node runs on ("mainnet", "testnet", "regtest", …), so that an
        invoice for another network is refused before the node sees it."""
        ...

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int = 3600) -> Invoice:
        """A new invoice for exactly ``amount_msat``, payable for ``expiry_s`` seconds."""
        ...

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice:
        """One of our invoices as it stands now (state, settle index, preimage once paid)."""
        ...

    def subscribe_invoices(
        self, add_index: int = 0, settle_index: int = 0, idle_s: float | None = None
    ) -> AsyncIterator[Invoice]:
        """Every invoice added or settled after the given indexes, then live updates,
        until the connection breaks (LightningError), or StreamIdle after ``idle_s``
        without a message."""
        ...

    async def pay_invoice(self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60) -> Payment:
        """Pays and waits for the outcome; PaymentFailed if it definitely failed."""
        ...

    async def track_payment(self, payment_hash: bytes, wait: bool = False) -> PaymentStatus:
        """What became of an outgoing payment: "in_flight" at once for one still under
        way, or with ``wait`` its final state; "unknown" if it was never initiated."""
        ...

    async def decode_invoice(self, bolt11: str) -> DecodedInvoice:
        """Amount, payment hash, payee and expiry of an invoice (signature checked)."""
        ...

    async def close(self) -> None:
        """Release connections; the node may be used again afterwards."""
        ...
