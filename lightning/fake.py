"""FakeNode: an in-memory LightningNode for fast in-process tests of the money paths.

Invoices carry real preimages and payment hashes and a bech32-valid BOLT 11 string with the
right amount (its signature is not real). An invoice settles when another FakeNode on the
same FakeNetwork pays it, or on demand with :meth:`FakeNode.settle`, as if someone paid it
from outside. Payments can be made to fail (``fail_payments``) and the node to be
unreachable (``unavailable``). Never used outside tests and tools: it moves no money.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from lightning.bolt11 import bech32_checksum
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

__all__ = ["FakeNetwork", "FakeNode", "fake_bolt11"]

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_MULTIPLIERS = (("m", 100_000_000), ("u", 100_000), ("n", 100))
_TAG_PAYMENT_HASH = 1  # 'p'
_HASH_GROUPS = 52  # 256 bits in 5-bit groups, padded


def fake_bolt11(amount_msat: int, payment_hash: bytes, timestamp: int) -> str:
    """A regtest (``lnbcrt``) invoice string: amount, timestamp and payment hash as
    BOLT 11 lays them out, valid bech32; the signature is zeros."""
    amount = ""
    if amount_msat:
        unit = next((u for u, f in _MULTIPLIERS if amount_msat % f == 0), "p")
        factor = dict(_MULTIPLIERS).get(unit)
        amount = f"{amount_msat // factor}{unit}" if factor else f"{amount_msat * 10}p"
    hrp = "lnbcrt" + amount
    stamp = [(timestamp >> 5 * (6 - i)) & 31 for i in range(7)]
    bits = int.from_bytes(payment_hash, "big") << 4
    tagged = [_TAG_PAYMENT_HASH, _HASH_GROUPS >> 5, _HASH_GROUPS & 31]
    tagged += [(bits >> 5 * (_HASH_GROUPS - 1 - i)) & 31 for i in range(_HASH_GROUPS)]
    data = stamp + tagged + [0] * 104
    data += bech32_checksum(hrp, data)
    return hrp + "1" + "".join(_CHARSET[d] for d in data)


class FakeNetwork:
    """The invoices of every FakeNode on it, so one node can pay another's."""

    def __init__(self) -> None:
        self.payees: dict[str, tuple[FakeNode, bytes]] = {}  # bolt11 → payee, payment hash


@dataclass
class _Entry:
    invoice: Invoice
    preimage: bytes = field(repr=False)
    expires_at: float


class FakeNode:
    """An in-memory Lightning node (see the module docstring)."""

    def __init__(
        self,
        network: FakeNetwork | None = None,
        name: str = "fake",
        clock: Callable[[], float] = time.time,
        fee_msat: int = 0,
    ) -> None:
        self.peers = network if network is not None else FakeNetwork()
        self.name = name
        self.pubkey = "02" + hashlib.sha256(name.encode()).hexdigest()
        self.clock = clock
        self.fee_msat = fee_msat
        self.fail_payments: str | None = None  # a reason: every payment fails with it
        self.unavailable = False  # every call raises LightningUnavailable
        self.payments: dict[bytes, PaymentStatus] = {}
        self._invoices: dict[bytes, _Entry] = {}
        self._add_index = 0
        self._settle_index = 0
        self._subscribers: list[asyncio.Queue[Invoice]] = []

    def _check_up(self) -> None:
        if self.unavailable:
            raise LightningUnavailable(f"fake node {self.name} is down")

    # --- what tests do to it ------------------------------------------------------------

    def settle(self, payment_hash: bytes) -> Invoice:
        """Marks an open invoice paid, as if someone outside paid it; returns it settled."""
        entry = self._invoices[payment_hash]
        if entry.invoice.state == InvoiceState.SETTLED:
            return entry.invoice
        if entry.invoice.state != InvoiceState.OPEN:
            raise LightningError(f"invoice is {entry.invoice.state}")
        self._settle_index += 1
        entry.invoice = replace(
            entry.invoice,
            state=InvoiceState.SETTLED,
            settle_index=self._settle_index,
            amount_paid_msat=entry.invoice.amount_msat,
            preimage=entry.preimage,
        )
        self._publish(entry.invoice)
        return entry.invoice

    def cancel(self, payment_hash: bytes) -> None:
        entry = self._invoices[payment_hash]
        if entry.invoice.state == InvoiceState.OPEN:
            entry.invoice = replace(entry.invoice, state=InvoiceState.CANCELED)
            self._publish(entry.invoice)

    def invoices(self) -> list[Invoice]:
        return [e.invoice for e in self._invoices.values()]

    def _publish(self, invoice: Invoice) -> None:
        for queue in self._subscribers:
            queue.put_nowait(invoice)

    # --- LightningNode --------------------------------------------------------------------

    async def get_info(self) -> NodeInfo:
        self._check_up()
        return NodeInfo(self.pubkey, self.name, 1, True, 1)

    async def network(self) -> str:
        self._check_up()
        return "regtest"  # fake_bolt11 writes lnbcrt invoices

    async def create_invoice(self, amount_msat: int, memo: str, expiry_s: int = 3600) -> Invoice:
        self._check_up()
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).digest()
        now = self.clock()
        self._add_index += 1
        invoice = Invoice(
            payment_hash=payment_hash,
            bolt11=fake_bolt11(amount_msat, payment_hash, int(now)),
            amount_msat=amount_msat,
            add_index=self._add_index,
        )
        self._invoices[payment_hash] = _Entry(invoice, preimage, now + expiry_s)
        self.peers.payees[invoice.bolt11] = (self, payment_hash)
        self._publish(invoice)
        return invoice

    async def lookup_invoice(self, payment_hash: bytes) -> Invoice:
        self._check_up()
        entry = self._invoices.get(payment_hash)
        if entry is None:
            raise LightningError("unable to locate invoice")
        return entry.invoice

    async def subscribe_invoices(
        self, add_index: int = 0, settle_index: int = 0, idle_s: float | None = None
    ) -> AsyncIterator[Invoice]:
        self._check_up()
        queue: asyncio.Queue[Invoice] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            backlog = [
                e.invoice
                for e in self._invoices.values()
                if e.invoice.add_index > add_index
                or (e.invoice.settle_index and e.invoice.settle_index > settle_index)
            ]
            for invoice in backlog:
                yield invoice
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), idle_s)
                except TimeoutError:
                    raise StreamIdle(f"no invoice update for {idle_s} s") from None
        finally:
            self._subscribers.remove(queue)

    async def pay_invoice(self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60) -> Payment:
        self._check_up()
        payee, payment_hash = self._payee(bolt11)
        entry = payee._invoices[payment_hash]
        failure = self.fail_payments
        if failure is None and entry.invoice.state != InvoiceState.OPEN:
            failure = "invoice is already paid" if entry.invoice.settle_index else "canceled"
        if failure is None and entry.expires_at <= self.clock():
            failure = "invoice expired"
        if failure is None and self.fee_msat > fee_limit_msat:
            failure = "no route within the fee limit"
        if failure is not None:
            self.payments[payment_hash] = PaymentStatus("failed", 0, None)
            raise PaymentFailed(f"payment failed: {failure}")
        payee.settle(payment_hash)
        self.payments[payment_hash] = PaymentStatus("succeeded", self.fee_msat, entry.preimage)
        return Payment(payment_hash, entry.preimage, entry.invoice.amount_msat, self.fee_msat)

    async def track_payment(self, payment_hash: bytes, wait: bool = False) -> PaymentStatus:
        self._check_up()
        return self.payments.get(payment_hash, PaymentStatus("unknown", 0, None))

    async def decode_invoice(self, bolt11: str) -> DecodedInvoice:
        self._check_up()
        payee, payment_hash = self._payee(bolt11)
        entry = payee._invoices[payment_hash]
        return DecodedInvoice(
            entry.invoice.payment_hash,
            entry.invoice.amount_msat,
            payee.pubkey,
            int(entry.expires_at),
        )

    async def close(self) -> None:
        return None

    def _payee(self, bolt11: str) -> tuple[FakeNode, bytes]:
        found = self.peers.payees.get(bolt11)
        if found is None:
            raise LightningError("invalid payment request")
        return found


# Checked by mypy: the fake is a LightningNode.
_: type[LightningNode] = FakeNode
