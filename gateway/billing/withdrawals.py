"""Paying an uploader's earnings out to a BOLT11 invoice they hand us.

The order is what keeps money safe: (1) in one transaction, record the withdrawal and move
amount + fee reserve from the balance to a hold (the balance CHECK refuses overdraw, and
SQLite serialises writers, so concurrent requests cannot both spend the same msat);
(2) pay through LND with the reserve as the fee limit; (3) in one transaction, settle
(pay out the amount and fee, refund the unused reserve) or release the hold. A crash
between (2) and (3) leaves the withdrawal 'pending'; `reconcile()` asks LND what became of
the payment and finishes it exactly once.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3

from gateway.billing import ledger
from gateway.clock import Clock, system_clock
from gateway.config import TenantSettings
from gateway.persistence import withdrawals as rows
from gateway.persistence.database import Database
from gateway.persistence.ledger import book
from gateway.persistence.withdrawals import Withdrawal
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from lightning.errors import LightningError, LightningUnavailable, PaymentFailed
from lightning.node import LightningNode

__all__ = ["Withdrawal", "WithdrawalRefused", "Withdrawals"]

log = logging.getLogger("bitcache.withdrawals")


class WithdrawalRefused(Exception):
    """The request cannot be honoured (bad invoice, insufficient funds); nothing changed."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug


class Withdrawals:
    """Pays out earnings through each tenant's node, and finishes what a crash left."""

    def __init__(
        self,
        db: Database,
        nodes: LightningNodes,
        tenants: TenantRegistry,
        fee_limit_bps: int,
        min_fee_msat: int,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._nodes = nodes
        self._tenants = tenants
        self._fee_limit_bps = fee_limit_bps
        self._min_fee_msat = min_fee_msat
        self._clock = clock
        self._paying: set[str] = set()  # ids this process is paying right now

    async def get(self, account_id: str, withdrawal_id: str) -> Withdrawal | None:
        return await rows.get(self._db, account_id, withdrawal_id)

    async def request(
        self, account_id: str, tenant: TenantSettings, bolt11: str, idempotency_key: str
    ) -> Withdrawal:
        """Holds the funds and pays through the tenant's node; a repeated key returns the
        first request's withdrawal."""
        existing = await rows.by_key(self._db, account_id, idempotency_key)
        if existing is not None:
            return existing
        lnd = self._nodes.for_tenant(tenant)
        try:
            invoice = await lnd.decode_invoice(bolt11)
        except LightningUnavailable:
            raise
        except LightningError as exc:
            raise WithdrawalRefused("bad-invoice", f"not a payable invoice: {exc}") from exc
        if invoice.amount_msat <= 0:
            raise WithdrawalRefused("bad-invoice", "the invoice must name an amount")
        if invoice.expires_at <= self._clock() + 10:
            raise WithdrawalRefused("bad-invoice", "the invoice has expired")
        reserve = ledger.fee_reserve_msat(
            invoice.amount_msat, self._fee_limit_bps, self._min_fee_msat
        )
        withdrawal_id = "wd_" + secrets.token_hex(8)
        try:
            async with self._db.transaction() as conn:
                await rows.insert(
                    conn,
                    withdrawal_id,
                    account_id,
                    idempotency_key,
                    bolt11,
                    invoice.payment_hash,
                    invoice.amount_msat,
                    reserve,
                    int(self._clock()),
                    tenant.id,
                )
                await book(
                    conn,
                    ledger.withdrawal_hold(withdrawal_id, account_id, invoice.amount_msat, reserve),
                )
        except ledger.InsufficientFunds as exc:
            raise WithdrawalRefused(
                "insufficient-funds",
                f"balance {exc.balance} msat does not cover {invoice.amount_msat} msat plus "
                f"a routing fee reserve of {reserve} msat",
            ) from exc
        except sqlite3.IntegrityError as exc:
            # A concurrent request with the same key won the race; or this invoice is
            # already being paid out.
            again = await rows.by_key(self._db, account_id, idempotency_key)
            if again is not None:
                return again
            raise WithdrawalRefused(
                "invoice-already-used", "this invoice is already being paid out"
            ) from exc
        return await self._pay(lnd, withdrawal_id, bolt11, reserve)

    async def _pay(
        self, lnd: LightningNode, withdrawal_id: str, bolt11: str, reserve: int
    ) -> Withdrawal:
        self._paying.add(withdrawal_id)
        try:
            payment = await lnd.pay_invoice(bolt11, fee_limit_msat=reserve)
        except PaymentFailed as exc:
            await self._finish(withdrawal_id, None, str(exc))
        except LightningError as exc:
            # Outcome unknown (LND unreachable mid-payment, or refused before sending):
            # leave it pending; reconcile() decides once LND can say what happened.
            log.warning("withdrawal %s outcome unknown: %s", withdrawal_id, exc)
        else:
            await self._finish(withdrawal_id, payment.fee_msat, None)
        finally:
            self._paying.discard(withdrawal_id)
        withdrawal = await rows.by_id(self._db, withdrawal_id)
        assert withdrawal is not None
        return withdrawal

    async def _finish(self, withdrawal_id: str, fee_paid: int | None, failure: str | None) -> None:
        """Settles (fee_paid given) or releases the hold, exactly once."""
        async with self._db.transaction() as conn:
            held = await rows.finish(conn, withdrawal_id, fee_paid, failure, int(self._clock()))
            if held is None:
                return  # finished by another path already
            account_id, amount, reserve = held.account_id, held.amount_msat, held.fee_reserve_msat
            if fee_paid is None:
                tx = ledger.withdrawal_release(withdrawal_id, account_id, amount, reserve)
            else:
                tx = ledger.withdrawal_settle(withdrawal_id, account_id, amount, reserve, fee_paid)
            await book(conn, tx)

    async def reconcile(self) -> int:
        """Finishes pending withdrawals from what LND knows; returns how many it finished."""
        finished = 0
        for withdrawal_id, payment_hash, tenant_id in await rows.pending(self._db):
            if withdrawal_id in self._paying:
                continue
            lnd = self._nodes.for_tenant(self._tenants.get(tenant_id))
            status = await lnd.track_payment(payment_hash)
            if status.state == "succeeded":
                await self._finish(withdrawal_id, status.fee_msat, None)
            elif status.state in ("failed", "unknown"):
                # 'unknown': LND records a payment before sending any HTLC, so a payment
                # it has never heard of was never sent.
                await self._finish(withdrawal_id, None, f"payment {status.state}")
            else:
                continue
            finished += 1
        return finished
