"""Booking settled invoices: chunk sales credit the uploader, plan purchases raise quotas,
credit purchases become spendable credit (and each spend of it pays the uploader).

Two paths see a settlement: LND's invoice subscription (billing/watcher.py, resumed from
the last settle index we booked, so nothing settled while the gateway was down is missed)
and a download that presents a valid preimage. Both call `book()`, which is idempotent: the
invoice row moves from 'open' to 'settled' once, in the same database transaction as its
ledger entries. A node's stream is only a witness for the invoices that node issued, for
the tenants it serves (a tenant controls its own node, and could claim anything); a
preimage is proof, whoever presents it.
"""

from __future__ import annotations

import logging

from gateway.billing import ledger
from gateway.billing.quota import Plan, extend
from gateway.clock import Clock, system_clock
from gateway.persistence import credits, files, invoices, quotas
from gateway.persistence.database import Connection, Database
from gateway.persistence.invoices import Reporter
from gateway.persistence.ledger import book
from gateway.tenants.registry import TenantRegistry

__all__ = ["Reporter", "Settlement"]

log = logging.getLogger("bitcache.settlement")


class Settlement:
    """Books settlements; node-independent (each tenant's rules come from the registry)."""

    def __init__(self, db: Database, tenants: TenantRegistry, clock: Clock = system_clock) -> None:
        self._db = db
        self._tenants = tenants
        self._clock = clock

    async def book(
        self,
        payment_hash: bytes,
        settle_index: int | None = None,
        node: str = "",
        reporter: Reporter | None = None,
    ) -> bool:
        """Books a settled invoice of ours; False if unknown, already booked, or not issued
        by ``reporter``, the node whose stream reports it (None: a preimage proved it)."""
        now = int(self._clock())
        async with self._db.transaction() as conn:
            booked = await self._book_chunk_sale(conn, payment_hash, now, settle_index, reporter)
            if not booked:
                booked = await self._book_plan(conn, payment_hash, now, reporter)
            if not booked:
                booked = await self._book_credit(conn, payment_hash, now, settle_index, reporter)
            if not booked and reporter is not None:
                issuer = await invoices.issuer_of(conn, payment_hash)
                if issuer is not None and issuer != reporter.node_id:
                    # Payment hashes are unique: an honest node never reports another
                    # node's invoice as settled.
                    log.warning(
                        "node %s reported invoice %s settled, but node %s issued it; ignored",
                        reporter.node_id,
                        payment_hash.hex(),
                        issuer,
                    )
            if settle_index:
                await invoices.record_settle_index(conn, node, settle_index)
        return booked

    async def _book_chunk_sale(
        self,
        conn: Connection,
        payment_hash: bytes,
        now: int,
        settle_index: int | None,
        reporter: Reporter | None,
    ) -> bool:
        sale = await invoices.settle_chunk_invoice(conn, payment_hash, now, settle_index, reporter)
        if sale is None:
            return False
        tenant = self._tenants.get(sale.tenant_id)
        fee_bps = tenant.operator_fee_bps if tenant else ledger.MAX_BPS  # removed brand
        owner = await files.owner_of(conn, sale.file_id)
        earned = 0
        if owner is not None:
            tx = ledger.for_tenant(
                ledger.chunk_sale(payment_hash.hex(), owner, sale.amount_msat, fee_bps),
                sale.tenant_id,
            )
            await book(conn, tx)
            user = ledger.user_account(owner)
            earned = sum(e.amount_msat for e in tx.entries if e.account == user)
        await files.add_sale(conn, sale.file_id, sale.chunk_count, earned)
        return True

    async def _book_credit(
        self,
        conn: Connection,
        payment_hash: bytes,
        now: int,
        settle_index: int | None,
        reporter: Reporter | None,
    ) -> bool:
        sale = await credits.settle_credit_invoice(conn, payment_hash, now, settle_index, reporter)
        if sale is None:
            return False
        tx = ledger.credit_purchase(payment_hash.hex(), sale.amount_msat)
        await book(conn, ledger.for_tenant(tx, sale.tenant_id))
        return True

    async def spend_credit(
        self,
        payment_hash: bytes,
        tenant_id: str,
        file_id: str,
        owner_id: str | None,
        chunk_count: int,
        amount_msat: int,
    ) -> credits.Spend | None:
        """Pays ``chunk_count`` chunks of ``file_id`` (``amount_msat`` in all) from the
        credit with ``payment_hash``: one conditional debit, and in the same transaction
        the uploader's earnings (``owner_id``'s: a file's owner never changes) and the
        operator's share exactly as for a chunk sale.
        None (nothing changed) if the credit holds less, expired, or is not this tenant's."""
        now = int(self._clock())
        async with self._db.transaction() as conn:
            spent = await credits.spend(conn, payment_hash, tenant_id, amount_msat, now)
            if spent is None:
                return None
            tenant = self._tenants.get(tenant_id)
            fee_bps = tenant.operator_fee_bps if tenant else ledger.MAX_BPS
            tx = ledger.for_tenant(
                ledger.credit_spend(
                    payment_hash.hex(), spent.number, owner_id, amount_msat, fee_bps
                ),
                tenant_id,
            )
            await book(conn, tx)
            user = ledger.user_account(owner_id) if owner_id is not None else None
            earned = sum(e.amount_msat for e in tx.entries if e.account == user)
            await files.add_sale(conn, file_id, chunk_count, earned)
        return spent

    async def _book_plan(
        self,
        conn: Connection,
        payment_hash: bytes,
        now: int,
        reporter: Reporter | None,
    ) -> bool:
        sale = await invoices.settle_plan_invoice(conn, payment_hash, now, reporter)
        if sale is None:
            return False
        await book(
            conn,
            ledger.for_tenant(
                ledger.plan_purchase(payment_hash.hex(), sale.amount_msat), sale.tenant_id
            ),
        )
        plan = self._sold_plan(sale)
        if plan is None:
            log.error(
                "settled plan %s (sold before its terms were recorded) is no longer in the"
                " catalogue; no subscription made",
                sale.plan_id,
            )
            return True
        current = await quotas.plan_subscriptions(conn, sale.account_id, sale.plan_id)
        sub = extend(current, plan, now)
        await quotas.add_subscription(conn, sale.account_id, sub, payment_hash)
        return True

    def _sold_plan(self, sale: invoices.PlanSale) -> Plan | None:
        """The plan as sold: the terms on the invoice row, whatever the catalogue says
        now. A sale from before terms were recorded takes the catalogue's."""
        if sale.quota_bytes is not None and sale.duration_s is not None:
            return Plan(
                id=sale.plan_id,
                name=sale.plan_id,  # the name is not part of what was sold
                quota_bytes=sale.quota_bytes,
                duration_s=sale.duration_s,
                price_msat=sale.amount_msat,
            )
        tenant = self._tenants.get(sale.tenant_id)
        return tenant.plan(sale.plan_id) if tenant else None

    async def expire(self, payment_hash: bytes) -> None:
        """The node canceled the invoice: it can no longer be paid."""
        async with self._db.transaction() as conn:
            await invoices.expire(conn, payment_hash)

    async def expire_stale(self, grace_s: int = 3_600) -> int:
        """Marks chunk (and credit) invoices long past their expiry as expired, so the reconcile at
        start-up asks LND only about invoices that could still have been paid. Safe: LND
        refuses payments to an expired invoice, and one settled in time is still booked
        from the invoice stream (booking accepts any state but 'settled')."""
        async with self._db.transaction() as conn:
            return await invoices.expire_stale(conn, int(self._clock()) - grace_s)

    async def settle_index(self, node: str) -> int:
        """The last settle index booked from ``node``, where its invoice stream resumes."""
        return await invoices.settle_index(self._db, node)
