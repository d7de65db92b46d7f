"""Booking settled invoices: chunk sales credit the uploader, plan purchases raise quotas.

Two paths see a settlement: LND's invoice subscription (resumed from the last settle index
we booked, so nothing settled while the gateway was down is missed) and a download that
presents a valid preimage. Both call `book()`, which is idempotent: the invoice row moves
from 'open' to 'settled' once, in the same database transaction as its ledger entries.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiosqlite

from gateway import ledger
from gateway.config import TenantSettings
from gateway.db import Database
from gateway.ledger_store import book
from gateway.quota import Subscription, extend
from lightning.errors import LightningError
from lightning.lnd import LndRestClient
from lightning.models import InvoiceState

log = logging.getLogger("bitcache.settlement")

_SETTLE_INDEX_KEY = "lnd_settle_index"


class Settlement:
    def __init__(
        self, db: Database, lnd: LndRestClient, tenant: TenantSettings, retry_after_s: int
    ) -> None:
        self._db = db
        self._lnd = lnd
        self._tenant = tenant
        self._retry_after_s = retry_after_s
        self.caught_up = asyncio.Event()  # set once the start-up reconciliation is done

    async def book(self, payment_hash: bytes, settle_index: int | None = None) -> bool:
        """Books a settled invoice of ours; False if unknown or already booked."""
        now = int(time.time())
        async with self._db.transaction() as conn:
            booked = await self._book_chunk_sale(conn, payment_hash, now, settle_index)
            if not booked:
                booked = await self._book_plan(conn, payment_hash, now)
            if settle_index:
                await conn.execute(
                    "INSERT INTO gateway_state (key, value) VALUES (?, ?) ON CONFLICT(key)"
                    " DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
                    (_SETTLE_INDEX_KEY, settle_index),
                )
        return booked

    async def _book_chunk_sale(
        self, conn: aiosqlite.Connection, payment_hash: bytes, now: int, settle_index: int | None
    ) -> bool:
        async with conn.execute(
            "UPDATE invoices SET state = 'settled', settled_at = ?, settle_index = ?"
            " WHERE payment_hash = ? AND state != 'settled'"
            " RETURNING file_id, amount_msat, last_chunk - first_chunk + 1",
            (now, settle_index, payment_hash),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        file_id, amount, count = row[0], int(row[1]), int(row[2])
        async with conn.execute("SELECT owner_id FROM files WHERE id = ?", (file_id,)) as cur:
            owner = await cur.fetchone()
        earned = 0
        if owner is not None and owner[0] is not None:
            tx = ledger.chunk_sale(
                payment_hash.hex(), owner[0], amount, self._tenant.operator_fee_bps
            )
            await book(conn, tx)
            user = ledger.user_account(owner[0])
            earned = sum(e.amount_msat for e in tx.entries if e.account == user)
        await conn.execute(
            "UPDATE files SET chunks_sold = chunks_sold + ?, earned_msat = earned_msat + ?"
            " WHERE id = ?",
            (count, earned, file_id),
        )
        return True

    async def _book_plan(self, conn: aiosqlite.Connection, payment_hash: bytes, now: int) -> bool:
        async with conn.execute(
            "UPDATE plan_invoices SET state = 'settled', settled_at = ?"
            " WHERE payment_hash = ? AND state != 'settled'"
            " RETURNING account_id, plan_id, amount_msat",
            (now, payment_hash),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        account_id, plan_id, amount = row[0], row[1], int(row[2])
        plan = self._tenant.plan(plan_id)
        if plan is None:  # the catalogue changed since the invoice; honour what was sold
            log.error("settled plan %s is no longer in the catalogue", plan_id)
            return True
        async with conn.execute(
            "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
            " WHERE account_id = ? AND plan_id = ?",
            (account_id, plan_id),
        ) as cur:
            current = [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) async for r in cur]
        sub = extend(current, plan, now)
        await conn.execute(
            "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
            " payment_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, plan_id, sub.quota_bytes, sub.starts_at, sub.ends_at, payment_hash),
        )
        await book(conn, ledger.plan_purchase(payment_hash.hex(), amount))
        return True

    async def reconcile(self) -> int:
        """Asks LND about every invoice we still think open; books the settled ones."""
        rows = await self._db.fetch_all(
            "SELECT payment_hash FROM invoices WHERE state = 'open'"
            " UNION ALL SELECT payment_hash FROM plan_invoices WHERE state = 'open'"
        )
        booked = 0
        for row in rows:
            invoice = await self._lnd.lookup_invoice(bytes(row[0]))
            if invoice.state == InvoiceState.SETTLED:
                booked += await self.book(invoice.payment_hash, invoice.settle_index or None)
            elif invoice.state == InvoiceState.CANCELED:
                await self._expire(invoice.payment_hash)
        return booked

    async def _expire(self, payment_hash: bytes) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE invoices SET state = 'expired' WHERE payment_hash = ? AND state = 'open'",
                (payment_hash,),
            )
            await conn.execute(
                "UPDATE plan_invoices SET state = 'canceled'"
                " WHERE payment_hash = ? AND state = 'open'",
                (payment_hash,),
            )

    async def _settle_index(self) -> int:
        row = await self._db.fetch_one(
            "SELECT value FROM gateway_state WHERE key = ?", (_SETTLE_INDEX_KEY,)
        )
        return int(row[0]) if row else 0

    async def run(self) -> None:
        """Reconciles, then follows LND's invoice stream; reconnects by itself forever."""
        while True:
            try:
                booked = await self.reconcile()
                if booked:
                    log.info("reconciled %d invoice(s) settled while we were away", booked)
                self.caught_up.set()
                async for invoice in self._lnd.subscribe_invoices(
                    settle_index=await self._settle_index()
                ):
                    if invoice.state == InvoiceState.SETTLED:
                        await self.book(invoice.payment_hash, invoice.settle_index or None)
            except LightningError as exc:
                log.warning("invoice stream interrupted (%s); retrying", exc)
            await asyncio.sleep(self._retry_after_s)
