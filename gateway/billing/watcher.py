"""Following each Lightning node's invoices, so every settlement is booked.

An InvoiceWatcher reconciles every invoice we still think open, then follows the node's
live stream from the last settle index booked, and reconnects forever. The WatcherPool
runs one per distinct node in use by any tenant, starting new ones as tenants appear; with
a StreamLease, only in the one process that holds the node's lease (stream_lease.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.billing.settlement import Settlement
from gateway.billing.stream_lease import StreamLease
from gateway.persistence import invoices
from gateway.persistence.database import Database
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from lightning.errors import LightningError
from lightning.models import InvoiceState
from lightning.node import LightningNode

log = logging.getLogger("bitcache.settlement")


class InvoiceWatcher:
    """Follows one LND node's invoices: a reconciliation of every invoice we still think
    open, then the live stream from the last settle index booked; reconnects forever."""

    def __init__(
        self,
        settlement: Settlement,
        db: Database,
        lnd: LightningNode,
        url: str,
        tenant_ids: Callable[[], list[str]],
        retry_after_s: int,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._lnd = lnd
        self._url = url
        self._node = ":" + url.rstrip("/")  # the key of this node's settle index
        self._tenant_ids = tenant_ids
        self._retry_after_s = retry_after_s

    async def reconcile(self) -> int:
        """Books what settled while we were not watching; returns how many."""
        booked = 0
        for payment_hash in await invoices.open_payment_hashes(self._db, self._tenant_ids()):
            invoice = await self._lnd.lookup_invoice(payment_hash)
            if invoice.state == InvoiceState.SETTLED:
                booked += await self._settlement.book(
                    invoice.payment_hash, invoice.settle_index or None, self._node
                )
            elif invoice.state == InvoiceState.CANCELED:
                await self._settlement.expire(invoice.payment_hash)
        return booked

    async def run(self) -> None:
        while True:
            try:
                booked = await self.reconcile()
                if booked:
                    log.info("reconciled %d invoice(s) settled while we were away", booked)
                start = await self._settlement.settle_index(self._node)
                async for invoice in self._lnd.subscribe_invoices(settle_index=start):
                    if invoice.state == InvoiceState.SETTLED:
                        await self._settlement.book(
                            invoice.payment_hash, invoice.settle_index or None, self._node
                        )
            except LightningError as exc:
                log.warning("invoice stream of %s interrupted (%s); retrying", self._url, exc)
            await asyncio.sleep(self._retry_after_s)


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
        lease: StreamLease | None = None,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._tenants = tenants
        self._nodes = nodes
        self._retry_after_s = retry_after_s
        self._lease = lease
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _tenant_ids(self, url: str) -> list[str]:
        return [t.id for t in self._tenants.tenants if self._nodes.settings_for(t).rest_url == url]

    async def ensure(self) -> None:
        for tenant in self._tenants.tenants:
            settings = self._nodes.settings_for(tenant)
            url = settings.rest_url
            if url in self._tasks:
                continue
            watcher = InvoiceWatcher(
                self._settlement,
                self._db,
                self._nodes.client(settings),
                url,
                functools.partial(self._tenant_ids, url),
                self._retry_after_s,
            )
            self._tasks[url] = asyncio.create_task(
                self._follow(url, watcher), name=f"invoices {url}"
            )

    def _follow(self, key: str, watcher: InvoiceWatcher) -> Coroutine[Any, Any, None]:
        """The node's stream; with a lease, only while this process holds the node's."""
        if self._lease is None:
            return watcher.run()
        return self._lease.follow(key, watcher.run)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
