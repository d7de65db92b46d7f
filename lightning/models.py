"""What the rest of Bitcache needs to know about invoices and payments, node-independent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class InvoiceState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    CANCELED = "canceled"
    ACCEPTED = "accepted"  # held (hodl) invoice: paid but not yet settled


@dataclass(frozen=True)
class Invoice:
    payment_hash: bytes
    bolt11: str
    amount_msat: int
    state: InvoiceState = InvoiceState.OPEN
    add_index: int = 0
    settle_index: int = 0
    amount_paid_msat: int = 0
    preimage: bytes | None = None


@dataclass(frozen=True)
class Payment:
    payment_hash: bytes
    preimage: bytes
    amount_msat: int
    fee_msat: int


@dataclass(frozen=True)
class NodeInfo:
    pubkey: str
    alias: str
    block_height: int
    synced_to_chain: bool
    num_active_channels: int


@dataclass(frozen=True)
class DecodedInvoice:
    payment_hash: bytes
    amount_msat: int  # 0 for an invoice without an amount
    destination: str
    expires_at: int


@dataclass(frozen=True)
class PaymentStatus:
    state: str  # "succeeded", "failed", "in_flight", or "unknown" (never initiated)
    fee_msat: int
    preimage: bytes | None
