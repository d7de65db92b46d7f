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

import asyncio
import functools
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass

from gateway.billing import ledger
from gateway.config import TenantSettings
from gateway.persistence.database import Database
from gateway.persistence.ledger import book
from gateway.tenants.registry import LightningNodes, TenantRegistry
from lightning.errors import LightningError, LightningUnavailable, PaymentFailed
from lightning.lnd import LndRestClient

log = logging.getLogger("bitcache.withdrawals")

# Several gateway processes may share one database, and any of them may reconcile a
# withdrawal another is paying. LND knows a payment only once the payer's request reaches
# it, so "LND never heard of it" is final only when no process can still send it: the
# payer never starts a payment later than SEND_DEADLINE_S after recording it, and its
# request gives up after PAY_TIMEOUT_S (+30 s of HTTP slack in LndRestClient).
SEND_DEADLINE_S = 30
PAY_TIMEOUT_S = 60
UNKNOWN_FINAL_AFTER_S = SEND_DEADLINE_S + PAY_TIMEOUT_S + 30 + 60


class WithdrawalRefused(Exception):
    """The request cannot be honoured (bad invoice, insufficient funds); nothing changed."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug


@dataclass(frozen=True)
class Withdrawal:
    id: str
    account_id: str
    amount_msat: int
    fee_reserve_msat: int
    fee_paid_msat: int | None
    state: str
    failure: str | None
    payment_hash: bytes

    def public(self) -> dict[str, object]:
        return {
            "withdrawal_id": self.id,
            "state": self.state,
            "amount_msat": self.amount_msat,
            "fee_reserve_msat": self.fee_reserve_msat,
            "fee_paid_msat": self.fee_paid_msat,
            "failure": self.failure,
            "payment_hash": self.payment_hash.hex(),
        }


_COLUMNS = (
    "id, account_id, amount_msat, fee_reserve_msat, fee_paid_msat, state, failure, payment_hash"
)


def _from_row(row: sqlite3.Row) -> Withdrawal:
    return Withdrawal(
        row[0],
        row[1],
        int(row[2]),
        int(row[3]),
        None if row[4] is None else int(row[4]),
        row[5],
        row[6],
        bytes(row[7]),
    )


class Withdrawals:
    def __init__(
        self,
        db: Database,
        nodes: LightningNodes,
        tenants: TenantRegistry,
        fee_limit_bps: int,
        min_fee_msat: int,
        answer_within_s: float = 20.0,
    ) -> None:
        self._db = db
        self._nodes = nodes
        self._tenants = tenants
        self._fee_limit_bps = fee_limit_bps
        self._min_fee_msat = min_fee_msat
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
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM withdrawals WHERE id = ? AND account_id = ?",
            (withdrawal_id, account_id),
        )
        return _from_row(row) if row else None

    async def _by_key(self, account_id: str, key: str) -> Withdrawal | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM withdrawals WHERE account_id = ? AND idempotency_key = ?",
            (account_id, key),
        )
        return _from_row(row) if row else None

    async def request(
        self, account_id: str, tenant: TenantSettings, bolt11: str, idempotency_key: str
    ) -> Withdrawal:
        """Holds the funds and pays through the tenant's node; a repeated key returns the
        first request's withdrawal."""
        existing = await self._by_key(account_id, idempotency_key)
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
        if invoice.expires_at <= time.time() + 10:
            raise WithdrawalRefused("bad-invoice", "the invoice has expired")
        reserve = ledger.fee_reserve_msat(
            invoice.amount_msat, self._fee_limit_bps, self._min_fee_msat
        )
        withdrawal_id = "wd_" + secrets.token_hex(8)
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO withdrawals (id, account_id, idempotency_key, bolt11,"
                    " payment_hash, amount_msat, fee_reserve_msat, state, created_at, tenant_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (
                        withdrawal_id,
                        account_id,
                        idempotency_key,
                        bolt11,
                        invoice.payment_hash,
                        invoice.amount_msat,
                        reserve,
                        int(time.time()),
                        tenant.id,
                    ),
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
            again = await self._by_key(account_id, idempotency_key)
            if again is not None:
                return again
            raise WithdrawalRefused(
                "invoice-already-used", "this invoice is already being paid out"
            ) from exc
        return await self._pay(lnd, withdrawal_id, bolt11, reserve)

    async def _pay(
        self, lnd: LndRestClient, withdrawal_id: str, bolt11: str, reserve: int
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
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM withdrawals WHERE id = ?", (withdrawal_id,)
        )
        assert row is not None
        return _from_row(row)

    def _paid(self, withdrawal_id: str, task: asyncio.Task[None]) -> None:
        self._paying.pop(withdrawal_id, None)
        if not task.cancelled() and task.exception() is not None:
            # Left pending: reconcile() finishes it from what LND knows.
            log.error("withdrawal %s: %r", withdrawal_id, task.exception())

    async def _pay_and_finish(
        self, lnd: LndRestClient, withdrawal_id: str, bolt11: str, reserve: int
    ) -> None:
        row = await self._db.fetch_one(
            "SELECT created_at FROM withdrawals WHERE id = ?", (withdrawal_id,)
        )
        assert row is not None
        if time.time() > int(row[0]) + SEND_DEADLINE_S:
            # Too late to send: another process's reconcile may already count on this
            # payment never happening (see UNKNOWN_FINAL_AFTER_S).
            await self._finish(withdrawal_id, None, "not sent in time")
            return
        try:
            payment = await lnd.pay_invoice(bolt11, fee_limit_msat=reserve, timeout_s=PAY_TIMEOUT_S)
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
        state = "failed" if fee_paid is None else "succeeded"
        async with self._db.transaction() as conn:
            async with conn.execute(
                "UPDATE withdrawals SET state = ?, fee_paid_msat = ?, failure = ?,"
                " finished_at = ? WHERE id = ? AND state = 'pending'"
                " RETURNING account_id, amount_msat, fee_reserve_msat",
                (state, fee_paid, failure, int(time.time()), withdrawal_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return  # finished by another path already
            account_id, amount, reserve = row[0], int(row[1]), int(row[2])
            if fee_paid is None:
                tx = ledger.withdrawal_release(withdrawal_id, account_id, amount, reserve)
            else:
                tx = ledger.withdrawal_settle(withdrawal_id, account_id, amount, reserve, fee_paid)
            await book(conn, tx)

    async def reconcile(self) -> int:
        """Finishes pending withdrawals from what LND knows; returns how many it finished."""
        rows = await self._db.fetch_all(
            "SELECT id, payment_hash, tenant_id, created_at FROM withdrawals"
            " WHERE state = 'pending'"
        )
        finished = 0
        for row in rows:
            withdrawal_id, payment_hash = row[0], bytes(row[1])
            if withdrawal_id in self._paying:
                continue
            lnd = self._nodes.for_tenant(self._tenants.get(row[2]))
            try:
                status = await lnd.track_payment(payment_hash)
            except LightningError as exc:  # this one later; the others now
                log.warning("withdrawal %s: cannot ask LND yet: %s", withdrawal_id, exc)
                continue
            if status.state == "succeeded":
                await self._finish(withdrawal_id, status.fee_msat, None)
            elif status.state == "failed":
                await self._finish(withdrawal_id, None, "payment failed")
            elif status.state == "unknown" and time.time() > int(row[3]) + UNKNOWN_FINAL_AFTER_S:
                # LND records a payment before sending any HTLC, and no process can send
                # this one any more: it was never sent.
                await self._finish(withdrawal_id, None, "payment never sent")
            else:
                continue  # in flight, or possibly about to be sent by another process
            finished += 1
        return finished
