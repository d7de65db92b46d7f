"""Following each Lightning node's invoices, so every settlement is booked.

An InvoiceWatcher reconciles every invoice we still think open, then follows the node's
live stream from the last settle index booked, and reconnects forever. The WatcherPool
runs one per distinct connection (URL and credentials) in use by any tenant, starting new
ones as tenants appear; with a StreamLease, only in the one process that holds the
connection's lease (stream_lease.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gateway.billing.settlement import Reporter, Settlement
from gateway.billing.stream_lease import StreamLease
from gateway.persistence import invoices
from gateway.persistence.database import Database
from gateway.tenants.nodes import LightningNodes, connection_key
from gateway.tenants.registry import TenantRegistry
from lightning.errors import LightningError, LightningUnavailable, StreamIdle
from lightning.models import InvoiceState
from lightning.node import LightningNode

log = logging.getLogger("bitcache.settlement")

# Reconnecting to LND: the first retry comes quickly (a cut stream is usually back at
# once), later ones back off up to the configured retry_after_s.
_BACKOFF_FIRST_S = 0.25
_BACKOFF_RESET_S = 30.0


class InvoiceWatcher:
    """Follows one LND node's invoices: a reconciliation of every invoice we still think
    open, then the live stream from the last settle index booked; reconnects forever.

    It books only invoices this node issued (by its identity, ``identity()``: the
    connection's cached pubkey), for the tenants it serves (``tenant_ids()``)."""

    def __init__(
        self,
        settlement: Settlement,
        db: Database,
        lnd: LightningNode,
        url: str,
        tenant_ids: Callable[[], list[str]],
        retry_after_s: int,
        connection: str | None = None,
        identity: Callable[[], Awaitable[str]] | None = None,
        idle_s: float = 60.0,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._lnd = lnd
        self._url = url
        self._identity = identity or self._ask_identity
        # The key of this watcher's settle index: one per connection, since two tenants'
        # connections to one URL each book only their own invoices. Before connections
        # were told apart it was the URL's, and everything below it was processed.
        self._legacy_node = ":" + url.rstrip("/")
        self._node = ":" + connection if connection else self._legacy_node
        self._tenant_ids = tenant_ids
        self._retry_after_s = retry_after_s
        self._idle_s = idle_s

    async def _ask_identity(self) -> str:
        return (await self._lnd.get_info()).pubkey

    def _reporter(self, node_id: str) -> Reporter:
        """This node as a witness, for the tenants it serves now (tenants come and go)."""
        return Reporter(node_id, tuple(self._tenant_ids()))

    async def reconcile(self) -> int:
        """Books what settled while we were not watching; returns how many."""
        booked = 0
        reporter = self._reporter(await self._identity())
        for payment_hash in await invoices.open_payment_hashes(self._db, reporter):
            try:
                invoice = await self._lnd.lookup_invoice(payment_hash)
            except LightningUnavailable:
                raise
            except LightningError as exc:  # one odd invoice must not stop the rest
                log.warning("cannot look up invoice %s: %s", payment_hash.hex(), exc)
                continue
            if invoice.state == InvoiceState.SETTLED:
                booked += await self._settlement.book(
                    payment_hash, invoice.settle_index or None, self._node, reporter
                )
            elif invoice.state == InvoiceState.CANCELED:
                await self._settlement.expire(payment_hash)
        return booked

    async def run(self) -> None:
        """Never returns: any failure (a stream cut mid-message, a bad line, a database
        error while booking) is logged and retried with back-off. Nothing is lost
        meanwhile: the stream resumes from the last settle index booked, which is stored
        in the same transaction as the booking, so an invoice not booked is replayed.

        Except from settle index 0, which LND reads as "no replay": with nothing booked
        yet, what settled between the reconcile and the subscription taking effect (LND
        sends its headers only with the first message) is found by a second reconcile
        once the first message arrives, or after an idle renewal."""
        delay = _BACKOFF_FIRST_S
        reconcile = True
        start = 0
        while True:
            started = time.monotonic()
            try:
                if reconcile:
                    booked = await self.reconcile()
                    if booked:
                        log.info("reconciled %d invoice(s) settled while we were away", booked)
                reconcile = True
                node_id = await self._identity()
                start = await self._settlement.settle_index(
                    self._node
                ) or await self._settlement.settle_index(self._legacy_node)
                unreplayed = not start
                async for invoice in self._lnd.subscribe_invoices(
                    settle_index=start, idle_s=self._idle_s
                ):
                    if unreplayed:  # the subscription is live: nothing can slip by now
                        unreplayed = False
                        await self.reconcile()
                    if invoice.state == InvoiceState.SETTLED:
                        await self._settlement.book(
                            invoice.payment_hash,
                            invoice.settle_index or None,
                            self._node,
                            self._reporter(node_id),
                        )
                    delay = _BACKOFF_FIRST_S  # the stream works: a later cut retries fast
                log.info("invoice stream of %s ended; reconnecting", self._url)
            except StreamIdle:
                # A connection that died without either end knowing (half-open, or a TLS
                # record cut short before the first message) looks idle forever: renew
                # it now and then. Resuming from a settle index misses nothing, so no
                # reconcile is needed then (see above for settle index 0).
                log.debug("invoice stream of %s idle for %s s; renewing", self._url, self._idle_s)
                reconcile = not start
                delay = _BACKOFF_FIRST_S
                continue
            except LightningError as exc:
                log.warning("invoice stream of %s interrupted (%s); retrying", self._url, exc)
            except Exception:  # the watcher is the retry: it must outlive any error
                log.exception("invoice watcher of %s failed; retrying", self._url)
            if time.monotonic() - started > _BACKOFF_RESET_S:
                delay = _BACKOFF_FIRST_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(float(self._retry_after_s), _BACKOFF_FIRST_S))


class WatcherPool:
    """One InvoiceWatcher per distinct connection in use by any tenant, started as tenants
    appear (the tenants file can add a brand with its own node at any time)."""

    def __init__(
        self,
        settlement: Settlement,
        db: Database,
        tenants: TenantRegistry,
        nodes: LightningNodes,
        retry_after_s: int,
        idle_s: float = 60.0,
        lease: StreamLease | None = None,
    ) -> None:
        self._settlement = settlement
        self._db = db
        self._tenants = tenants
        self._nodes = nodes
        self._retry_after_s = retry_after_s
        self._idle_s = idle_s
        self._lease = lease
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _tenant_ids(self, key: str) -> list[str]:
        return [
            t.id
            for t in self._tenants.tenants
            if connection_key(self._nodes.settings_for(t)) == key
        ]

    async def ensure(self) -> None:
        """Starts a watcher for every connection in use, and restarts one whose task
        ended: a watcher should never end, but if one does (a bug, a cancellation from
        outside), the node's invoices must still be followed."""
        for tenant in self._tenants.tenants:
            settings = self._nodes.settings_for(tenant)
            key = connection_key(settings)
            task = self._tasks.get(key)
            if task is not None and not task.done():
                continue
            if task is not None:
                log.error(
                    "invoice watcher of %s had ended (%s); restarting it",
                    settings.rest_url,
                    _ending(task),
                )
            watcher = InvoiceWatcher(
                self._settlement,
                self._db,
                self._nodes.client(settings),
                settings.rest_url,
                functools.partial(self._tenant_ids, key),
                self._retry_after_s,
                key,
                functools.partial(self._nodes.node_id, settings),
                self._idle_s,
            )
            self._tasks[key] = asyncio.create_task(
                self._follow(key, watcher), name=f"invoices {key}"
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


def _ending(task: asyncio.Task[None]) -> str:
    """How a finished task ended, for the log."""
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return "returned" if exc is None else f"{type(exc).__name__}: {exc}"
