"""Prepaid credit: sold over Lightning ahead of time, spent by a database debit per range.

A paid download's first byte would otherwise wait for an invoice and a Lightning payment.
With credit it waits for one conditional UPDATE: the holder presents its credit token on a
chunk request, the range's price is taken from the credit (and paid to the uploader and
the operator as a chunk sale would be, in the same transaction), and the answer carries a
chunk token for the range, bound to the credit's payment hash, so the holder presents it
with the preimage it already has for the range's other chunks. Nothing is served before
the debit commits.

The credit's invoice is booked when LND's stream reports it or as soon as its preimage is
presented (settle on proof, as for chunk tokens), once either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import l402
from gateway.billing.credit_rules import CreditState, check_purchase, refusal
from gateway.billing.pricing import ChunkRange
from gateway.billing.settlement import Settlement
from gateway.billing.tokens import TokenService
from gateway.clock import Clock, system_clock
from gateway.persistence import credits
from gateway.persistence.database import Database
from gateway.persistence.files import FileRecord
from l402.macaroon import to_base64
from lightning.node import LightningNode

__all__ = ["CreditChallenge", "CreditRefused", "CreditService", "RangeBought"]


class CreditRefused(Exception):
    """The credit cannot pay this range (too little left, expired, not this tenant's);
    ``remaining_msat`` is what it holds (None if it is not a credit of this tenant)."""

    def __init__(self, detail: str, remaining_msat: int | None) -> None:
        super().__init__(detail)
        self.remaining_msat = remaining_msat


@dataclass(frozen=True)
class CreditChallenge:
    macaroon_b64: str
    bolt11: str
    amount_msat: int
    valid_until: int  # the credit can be spent until then


@dataclass(frozen=True)
class RangeBought:
    """A range paid from credit: the chunk token for it and what the credit has left."""

    macaroon_b64: str
    chunks: ChunkRange
    amount_msat: int
    remaining_msat: int
    valid_until: int


class CreditService:
    """Sells credit, checks credit tokens, spends credit on chunk ranges."""

    def __init__(
        self,
        secret: bytes,
        db: Database,
        settlement: Settlement,
        tokens: TokenService,
        token_ttl_s: int,
        credit_ttl_s: int,
        max_msat: int,
        clock: Clock = system_clock,
    ) -> None:
        self._secret = secret
        self._db = db
        self._settlement = settlement
        self._tokens = tokens
        self._token_ttl_s = token_ttl_s
        self._credit_ttl_s = credit_ttl_s
        self.max_msat = max_msat
        self._clock = clock

    async def challenge(
        self,
        tenant_id: str,
        amount_msat: int,
        node: LightningNode,
        invoice_expiry_s: int,
        node_id: str,
        label: str,
    ) -> CreditChallenge:
        """An invoice for ``amount_msat`` of credit on the tenant's node (``node_id``), and
        a credit macaroon bound to it and to the tenant. ValueError if the amount is out
        of bounds."""
        check_purchase(amount_msat, self.max_msat)
        invoice = await node.create_invoice(
            amount_msat, f"{label}: credit", expiry_s=invoice_expiry_s
        )
        now = int(self._clock())
        valid_until = now + self._credit_ttl_s
        macaroon = l402.mint_credit(self._secret, invoice.payment_hash, tenant_id, valid_until)
        async with self._db.transaction() as conn:
            await credits.add_credit_invoice(
                conn,
                invoice.payment_hash,
                tenant_id,
                node_id,
                amount_msat,
                invoice.bolt11,
                now,
                now + invoice_expiry_s,
                valid_until,
            )
        return CreditChallenge(to_base64(macaroon), invoice.bolt11, amount_msat, valid_until)

    def verify(self, authorization: list[str], tenant_id: str) -> bytes:
        """The payment hash of a paid credit token of this gateway for ``tenant_id``, valid
        now; raises l402.L402Error (or TokenRejected) otherwise."""
        token, _ = l402.verify_credit(authorization, self._secret, tenant_id, int(self._clock()))
        return token.payment_hash

    async def state(self, payment_hash: bytes) -> CreditState | None:
        """The credit as it stands, its invoice booked first: ``payment_hash`` comes from
        :meth:`verify`, whose preimage check proved the payment."""
        await self._tokens.note_paid(payment_hash)
        return await credits.credit(self._db, payment_hash)

    async def spend(self, payment_hash: bytes, file: FileRecord, chunks: ChunkRange) -> RangeBought:
        """Pays ``chunks`` of ``file`` from the credit (``payment_hash`` from :meth:`verify`)
        and mints their chunk token; raises CreditRefused (nothing spent) if the credit
        cannot pay all of them."""
        # The presented preimage proves the credit's invoice paid: book it now if LND's
        # stream has not yet (once per process; a no-op after).
        await self._tokens.note_paid(payment_hash)
        amount = file.price_msat * chunks.count
        spent = await self._settlement.spend_credit(
            payment_hash, file.tenant_id, file.id, file.owner_id, chunks.count, amount
        )
        if spent is None:
            now = int(self._clock())
            current = await credits.credit(self._db, payment_hash)
            left = (
                current.remaining_msat
                if current is not None and current.tenant_id == file.tenant_id
                else None
            )
            raise CreditRefused(refusal(current, file.tenant_id, amount, now), left)
        valid_until = int(self._clock()) + self._token_ttl_s
        macaroon = l402.mint_token(
            self._secret, payment_hash, file.id, chunks.first, chunks.last, valid_until
        )
        return RangeBought(to_base64(macaroon), chunks, amount, spent.remaining_msat, valid_until)
