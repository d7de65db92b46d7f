"""Paying Lightning invoices for chunk ranges.

A :class:`Payer` pays an invoice and returns its preimage, the proof of payment that unlocks
the L402 token. It must refuse an invoice whose amount is not exactly what the gateway
announced, before any money moves.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from client.errors import PaymentError, PaymentRefused
from lightning.bolt11 import invoice_amount_msat
from lightning.errors import LightningError, LightningUnavailable, PaymentFailed
from lightning.node import LightningNode

__all__ = ["LndPayer", "Payer", "check_invoice_amount", "format_msat"]

log = logging.getLogger("bitcache.client")

PREIMAGE_BYTES = 32


def format_msat(msat: int) -> str:
    """``2 sat``, ``0.5 sat``, ``1.234 sat``."""
    whole, frac = divmod(msat, 1000)
    return f"{whole} sat" if not frac else f"{msat / 1000:.3f}".rstrip("0") + " sat"


class Payer(Protocol):
    """Pays invoices. Implementations may expose a running ``fees_msat`` total, and an
    ``async recover(bolt11) -> bytes | None`` that returns the preimage of an invoice the
    node paid earlier (a download resumed after a crash uses it not to pay twice)."""

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        """Pay ``bolt11`` if it asks exactly ``expected_msat``; return the 32-byte preimage.

        Raises PaymentRefused (nothing paid) or PaymentError (payment failed).
        """
        ...


def check_invoice_amount(bolt11: str, expected_msat: int) -> None:
    """PaymentRefused unless the invoice asks exactly ``expected_msat``."""
    try:
        amount = invoice_amount_msat(bolt11)
    except ValueError as exc:
        raise PaymentRefused(f"the gateway's invoice is not a valid invoice: {exc}") from None
    if amount is None:
        # Paying an open amount would let the payee decide what we pay.
        raise PaymentRefused("the gateway's invoice has no amount; refusing to pay it")
    if amount != expected_msat:
        raise PaymentRefused(
            f"the gateway's invoice asks {format_msat(amount)}, but it announced "
            f"{format_msat(expected_msat)}; refusing to pay"
        )


class LndPayer:
    """Pays through a Lightning node (LND's REST API in practice), within a routing-fee limit
    per payment."""

    def __init__(self, client: LightningNode, max_fee_msat: int, timeout_s: int = 60) -> None:
        self._client = client
        self._max_fee_msat = max_fee_msat
        self._timeout_s = timeout_s
        self.fees_msat = 0
        self.paid_msat = 0
        self.payments = 0

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        check_invoice_amount(bolt11, expected_msat)
        what = format_msat(expected_msat)
        try:
            payment = await self._client.pay_invoice(
                bolt11, fee_limit_msat=self._max_fee_msat, timeout_s=self._timeout_s
            )
        except PaymentFailed as exc:
            raise PaymentError(f"payment of {what} failed: {exc}") from None
        except LightningUnavailable as exc:
            # The node may have sent the payment before the connection broke.
            raise PaymentError(
                f"the Lightning node became unreachable while paying {what}; the payment "
                f"may have gone through, check the node before retrying: {exc}"
            ) from None
        except LightningError as exc:
            raise PaymentError(f"the Lightning node did not pay {what}: {exc}") from None
        preimage = payment.preimage
        if len(preimage) != PREIMAGE_BYTES or (
            payment.payment_hash and hashlib.sha256(preimage).digest() != payment.payment_hash
        ):
            raise PaymentError("the Lightning node returned a preimage that does not match")
        self.fees_msat += payment.fee_msat
        self.paid_msat += expected_msat
        self.payments += 1
        log.debug("paid %s (fee %s)", what, format_msat(payment.fee_msat))
        return preimage

    async def recover(self, bolt11: str) -> bytes | None:
        """The preimage if this node paid `bolt11` before (waiting for a payment still in
        flight to end); None if it never paid it or the payment failed."""
        try:
            decoded = await self._client.decode_invoice(bolt11)
            status = await self._client.track_payment(decoded.payment_hash, wait=True)
        except LightningError as exc:
            # Not knowing is not "unpaid": stop, keep the record, and try again later.
            raise PaymentError(
                f"cannot ask the Lightning node whether an earlier payment went through: {exc}"
            ) from None
        preimage = status.preimage
        if status.state != "succeeded" or preimage is None:
            return None
        if hashlib.sha256(preimage).digest() != decoded.payment_hash:
            raise PaymentError("the Lightning node returned a preimage that does not match")
        return preimage
