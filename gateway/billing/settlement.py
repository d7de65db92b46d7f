"""Booking settled invoices: chunk sales credit the uploader, plan purchases raise quotas.

Two paths see a settlement: LND's invoice subscription (resumed from the last settle index
we booked, so nothing settled while the gateway was down is missed) and a download that
presents a valid preimage. Both call `book()`, which is idempotent: the invoice row moves
from 'open' to 'settled' once, in the same database transaction as its ledger entries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import aiosqlite

from gateway.billing import ledger
from gateway.billing.quota import Subscription, extend
from gateway.persistence.database import Database
from gateway.persistence.ledger import book
from gateway.tenants.registry import LightningNodes, TenantRegistry
from lightning.errors import LightningError, LightningUnavailable, StreamIdle
from lightning.lnd import LndRestClient
from lightning.models import InvoiceState

log = logging.getLogger("bitcache.settlement")

_SETTLE_INDEX_KEY = "lnd_settle_index"
# Reconnecting to LND: the first retry comes quickly (a cut stream is usually back at
# once), later ones back off up to the configured retry_after_s.
_BACKOFF_FIRST_S = 0.25
_BACKOFF_RESET_S = 30.0


class Settlement:
    """Books settlements; node-independent (each tenant's rules come from the registry)."""

    def __init__(self, db: Database, tenants: TenantRegistry) -> None:
        self._db = db
        self._tenants = tenants

    async def book(
        self, payment_hash: bytes, settle_index: int | None = None, node: str = ""
    ) -> bool:
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
                    (_SETTLE_INDEX_KEY + node, settle_index),
                )
        return booked

    async def _book_chunk_sale(
        self, conn: aiosqlite.Connection, payment_hash: bytes, now: int, settle_index: int | None
    ) -> bool:
        async with conn.execute(
            "UPDATE invoices SET state = 'settled', settled_at = ?, settle_index = ?"
            " WHERE payment_hash = ? AND state != 'settled'"
            " RETURNING file_id, amount_msat, last_chunk - first_chunk + 1, tenant_id",
            (now, settle_index, payment_hash),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        file_id, amount, count, tenant_id = row[0], int(row[1]), int(row[2]), row[3]
        tenant = self._tenants.get(tenant_id)
        fee_bps = tenant.operator_fee_bps if tenant else ledger.MAX_BPS  # removed brand
        async with conn.execute("SELECT owner_id FROM files WHERE id = ?", (file_id,)) as cur:
            owner = await cur.fetchone()
        earned = 0
        if owner is not None and owner[0] is not None:
            tx = ledger.for_tenant(
                ledger.chunk_sale(payment_hash.hex(), owner[0], amount, fee_bps), tenant_id
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
            " RETURNING account_id, plan_id, amount_msat, tenant_id",
            (now, payment_hash),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        account_id, plan_id, amount, tenant_id = row[0], row[1], int(row[2]), row[3]
        await book(
            conn, ledger.for_tenant(ledger.plan_purchase(payment_hash.hex(), amount), tenant_id)
        )
        tenant = self._tenants.get(tenant_id)
        plan = tenant.plan(plan_id) if tenant else None
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
        return True

    async def expire(self, payment_hash: bytes) -> None:
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

    async def expire_stale(self, grace_s: int = 3_600) -> int:
        """Marks chunk invoices long past their expiry as expired, so the reconcile at
        start-up asks LND only about invoices that could still have been paid. Safe: LND
        refuses payments to an expired invoice, and one settled in time is still booked
        from the invoice stream (booking accepts any state but 'settled')."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE invoices SET state = 'expired' WHERE state = 'open' AND expires_at < ?",
                (int(time.time()) - grace_s,),
            )
            return cur.rowcount

    async def settle_index(self, node: str) -> int:
        row = await self._db.fetch_one(
            "SELECT value FROM gateway_state WHERE key = ?", (_SETTLE_INDEX_KEY + node,)
        )
        return int(row[0]) if row else 0


class InvoiceWatcher:
    """Follows one LND node's invoices: a reconciliation of every invoice we still think
    open, then the live stream from the last settle index booked; reconnects forever."""

    def __init__(
        self,
        settlement: Settlement,
        db: Database,
        lnd: LndRestClient,
        tenant_ids: Callable[[], list[str]],
        retry_after_s: int,
        idle_s: float = 60.0,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._lnd = lnd
        self._node = ":" + lnd.url
        self._tenant_ids = tenant_ids
        self._retry_after_s = retry_after_s
        self._idle_s = idle_s

    async def reconcile(self) -> int:
        tenants = self._tenant_ids()
        marks = ",".join("?" * len(tenants))
        rows = await self._db.fetch_all(
            f"SELECT payment_hash FROM invoices WHERE state = 'open' AND tenant_id IN ({marks})"
            " UNION ALL SELECT payment_hash FROM plan_invoices"
            f" WHERE state = 'open' AND tenant_id IN ({marks})",
            [*tenants, *tenants],
        )
        booked = 0
        for row in rows:
            try:
                invoice = await self._lnd.lookup_invoice(bytes(row[0]))
            except LightningUnavailable:
                raise
            except LightningError as exc:  # one odd invoice must not stop the rest
                log.warning("cannot look up invoice %s: %s", bytes(row[0]).hex(), exc)
                continue
            if invoice.state == InvoiceState.SETTLED:
                booked += await self._settlement.book(
                    invoice.payment_hash, invoice.settle_index or None, self._node
                )
            elif invoice.state == InvoiceState.CANCELED:
                await self._settlement.expire(invoice.payment_hash)
        return booked

    async def run(self) -> None:
        """Never returns: any failure (a stream cut mid-message, a bad line, a database
        error while booking) is logged and retried with back-off. Nothing is lost
        meanwhile: the stream resumes from the last settle index booked, which is stored
        in the same transaction as the booking, so an invoice not booked is replayed."""
        delay = _BACKOFF_FIRST_S
        reconcile = True
        while True:
            started = time.monotonic()
            try:
                if reconcile:
                    booked = await self.reconcile()
                    if booked:
                        log.info("reconciled %d invoice(s) settled while we were away", booked)
                reconcile = True
                start = await self._settlement.settle_index(self._node)
                async for invoice in self._lnd.subscribe_invoices(
                    settle_index=start, idle_s=self._idle_s
                ):
                    if invoice.state == InvoiceState.SETTLED:
                        await self._settlement.book(
                            invoice.payment_hash, invoice.settle_index or None, self._node
                        )
                    delay = _BACKOFF_FIRST_S  # the stream works: a later cut retries fast
                log.info("invoice stream of %s ended; reconnecting", self._lnd.url)
            except StreamIdle:
                # A connection that died without either end knowing (half-open, or a TLS
                # record cut short before the first message) looks idle forever: renew
                # it now and then. Resuming from the settle index misses nothing, so no
                # reconcile is needed.
                log.debug(
                    "invoice stream of %s idle for %s s; renewing", self._lnd.url, self._idle_s
                )
                reconcile = False
                delay = _BACKOFF_FIRST_S
                continue
            except LightningError as exc:
                log.warning("invoice stream of %s interrupted (%s); retrying", self._lnd.url, exc)
            except Exception:  # the watcher is the retry: it must outlive any error
                log.exception("invoice watcher of %s failed; retrying", self._lnd.url)
            if time.monotonic() - started > _BACKOFF_RESET_S:
                delay = _BACKOFF_FIRST_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(float(self._retry_after_s), _BACKOFF_FIRST_S))


class WatcherPool:
    """One InvoiceWatcher per distinct LND node in use by any tenant, started as tenants
    appear (the tenants file can add a brand with its own node at any time)."""

    def __init__(
        self,
        settlement: Settlement,
        db: Database,
        tenants: TenantRegistry,
        nodes: LightningNodes,
        retry_after_s: int,
        idle_s: float = 60.0,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._tenants = tenants
        self._nodes = nodes
        self._retry_after_s = retry_after_s
        self._idle_s = idle_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _tenant_ids(self, url: str) -> list[str]:
        return [t.id for t in self._tenants.tenants if self._nodes.settings_for(t).rest_url == url]

    async def ensure(self) -> None:
        """Starts a watcher for every node in use, and restarts one whose task ended: a
        watcher should never end, but if one does (a bug, a cancellation from outside),
        the node's invoices must still be followed."""
        for tenant in self._tenants.tenants:
            settings = self._nodes.settings_for(tenant)
            url = settings.rest_url
            task = self._tasks.get(url)
            if task is not None and not task.done():
                continue
            if task is not None:
                log.error("invoice watcher of %s had ended (%s); restarting it", url, _ending(task))
            watcher = InvoiceWatcher(
                self._settlement,
                self._db,
                self._nodes.client(settings),
                functools.partial(self._tenant_ids, url),
                self._retry_after_s,
                self._idle_s,
            )
            self._tasks[url] = asyncio.create_task(watcher.run(), name=f"invoices {url}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


def _ending(task: asyncio.Task[None]) -> str:
    """How a finished task ended, for the log."""
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return "returned" if exc is None else f"{type(exc).__name__}: {exc}"
