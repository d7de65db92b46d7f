"""Paying an uploader's earnings out to a BOLT11 invoice they hand us.

The order is what keeps money safe: (1) in one transaction, record the withdrawal and move
amount + fee reserve from the balance to a hold (the balance CHECK refuses overdraw, and
SQLite serialises writers, so concurrent requests cannot both spend the same msat);
(2) pay through LND with the reserve as the fee limit; (3) in one transaction, settle
(pay out the amount and fee, refund the unused reserve) or release the hold. A crash
between (2) and (3) leaves the withdrawal 'pending'; `reconcile()` asks the node the payment
was sent through what became of it and finishes it exactly once.

Money leaves through the tenant's own outside-world account (``ledger.for_tenant``), as its
sales came in, so each tenant's books sum to zero on their own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import sqlite3

from gateway.billing import ledger
from gateway.clock import Clock, system_clock
from gateway.config import LndSettings, TenantSettings
from gateway.persistence import withdrawals as rows
from gateway.persistence.database import Database
from gateway.persistence.ledger import book
from gateway.persistence.withdrawals import Withdrawal
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from lightning.errors import LightningError, LightningUnavailable, PaymentFailed
from lightning.node import LightningNode

__all__ = ["UNKNOWN_RELEASE_MARGIN_S", "Withdrawal", "WithdrawalRefused", "Withdrawals"]

log = logging.getLogger("bitcache.withdrawals")

# A payment LND has never heard of was never sent, but it could still be: by a request in
# transit, or another process. Once its invoice has expired no node starts paying it, so
# the hold is released only after the expiry plus this margin (clock skew, slow requests).
UNKNOWN_RELEASE_MARGIN_S = 3_600

# What identifies a connection; the invoice expiry is not part of it.
_CONNECTION_FIELDS = {"rest_url", "tls_cert", "macaroon"}


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
        answer_within_s: float = 20.0,
    ) -> None:
        self._db = db
        self._nodes = nodes
        self._tenants = tenants
        self._fee_limit_bps = fee_limit_bps
        self._min_fee_msat = min_fee_msat
        self._clock = clock
        # A payment still in flight after this long is answered 202 and followed on.
        self._answer_within_s = answer_within_s
        self._paying: dict[str, asyncio.Task[None]] = {}  # ids this process is paying now

    async def close(self) -> None:
        """Stops following payments still in flight; reconcile() finishes them later."""
        tasks = list(self._paying.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def get(self, account_id: str, withdrawal_id: str) -> Withdrawal | None:
        return await rows.get(self._db, account_id, withdrawal_id)

    async def request(
        self, account_id: str, tenant: TenantSettings, bolt11: str, idempotency_key: str
    ) -> Withdrawal:
        """Holds the funds and pays through the tenant's node; a repeated key returns the
        first request's withdrawal."""
        existing = await rows.by_key(self._db, account_id, idempotency_key)
        if existing is not None:
            return _same_request(existing, bolt11)
        settings = self._nodes.settings_for(tenant)
        lnd = self._nodes.client(settings)
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
        node_id = await self._nodes.node_id(settings)
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
                    node_id,
                    settings.model_dump_json(include=_CONNECTION_FIELDS),
                    invoice.expires_at,
                )
                hold = ledger.withdrawal_hold(
                    withdrawal_id, account_id, invoice.amount_msat, reserve
                )
                await book(conn, ledger.for_tenant(hold, tenant.id))
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
                return _same_request(again, bolt11)
            raise WithdrawalRefused(
                "invoice-already-used", "this invoice is already being paid out"
            ) from exc
        return await self._pay(lnd, withdrawal_id, bolt11, reserve)

    async def _pay(
        self, lnd: LightningNode, withdrawal_id: str, bolt11: str, reserve: int
    ) -> Withdrawal:
        """Pays, and answers with the outcome, or 'pending' if the payment is still in
        flight after answer_within_s (it is then followed to its end in the background)."""
        task = asyncio.create_task(
            self._pay_and_finish(lnd, withdrawal_id, bolt11, reserve),
            name=f"withdrawal {withdrawal_id}",
        )
        self._paying[withdrawal_id] = task
        task.add_done_callback(functools.partial(self._paid, withdrawal_id))
        # wait() never cancels the task: a caller going away does not abandon the payment.
        await asyncio.wait([task], timeout=self._answer_within_s)
        withdrawal = await rows.by_id(self._db, withdrawal_id)
        assert withdrawal is not None
        return withdrawal

    def _paid(self, withdrawal_id: str, task: asyncio.Task[None]) -> None:
        self._paying.pop(withdrawal_id, None)
        if not task.cancelled() and task.exception() is not None:
            # Left pending: reconcile() finishes it from what the node knows.
            log.error("withdrawal %s: %r", withdrawal_id, task.exception())

    async def _pay_and_finish(
        self, lnd: LightningNode, withdrawal_id: str, bolt11: str, reserve: int
    ) -> None:
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
            await book(conn, ledger.for_tenant(tx, held.tenant_id))

    async def reconcile(self) -> int:
        """Finishes pending withdrawals from what their nodes know; returns how many it
        finished. A node that cannot answer now leaves its withdrawals for the next run,
        and the others are still finished."""
        finished = 0
        for pending in await rows.pending(self._db):
            if pending.id in self._paying:
                continue
            try:
                finished += await self._reconcile_one(pending)
            except LightningError as exc:
                log.warning("withdrawal %s: its node cannot say yet: %s", pending.id, exc)
        return finished

    def _sent_through(self, pending: rows.Pending) -> LndSettings:
        """The connection the payment went out on; the tenant's node for old rows."""
        if pending.node_connection is None:
            return self._nodes.settings_for(self._tenants.get(pending.tenant_id))
        return LndSettings.model_validate_json(pending.node_connection)

    async def _reconcile_one(self, pending: rows.Pending) -> bool:
        settings = self._sent_through(pending)
        if pending.node_id is not None and await self._nodes.node_id(settings) != pending.node_id:
            # Another node answers there now: its 'unknown' would mean nothing.
            log.error(
                "withdrawal %s went out through node %s, which %s no longer reaches; left pending",
                pending.id,
                pending.node_id,
                settings.rest_url,
            )
            return False
        lnd = self._nodes.client(settings)
        status = await lnd.track_payment(pending.payment_hash)
        if status.state == "succeeded":
            await self._finish(pending.id, status.fee_msat, None)
            return True
        if status.state == "failed":
            await self._finish(pending.id, None, "payment failed")
            return True
        if status.state == "unknown":
            # LND records a payment before sending any HTLC, so one it has never heard of
            # was not sent; but until its invoice has expired it still could be.
            expires_at = pending.invoice_expires_at
            if expires_at is None:
                expires_at = (await lnd.decode_invoice(pending.bolt11)).expires_at
            if self._clock() > expires_at + UNKNOWN_RELEASE_MARGIN_S:
                await self._finish(pending.id, None, "payment never sent")
                return True
        return False  # in flight (a hold invoice may keep it so for days), or too early


def _same_request(existing: Withdrawal, bolt11: str) -> Withdrawal:
    """The first request's withdrawal, if this one asks the same (the body is only the
    invoice); WithdrawalRefused if the key was used for another request."""
    if existing.bolt11.lower() != bolt11.lower():  # BOLT 11 is case-insensitive
        raise WithdrawalRefused(
            "idempotency-key-reused",
            "this Idempotency-Key was used for a withdrawal to another invoice; send a new "
            "key for a new withdrawal",
        )
    return existing
