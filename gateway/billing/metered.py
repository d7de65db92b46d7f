"""Settlement that also counts what it booked, for /metrics.

A thin layer over `Settlement.book`: every path that books (the invoice stream, the
reconcile, a presented preimage) goes through it, so nothing is counted twice or missed,
and settlement itself stays free of metrics. Only a booking that happened is counted (book
returned True); the invoice's tenant and amount are read back after the commit.
"""

from __future__ import annotations

from typing import Any

from gateway.billing.settlement import Settlement
from gateway.clock import Clock, system_clock
from gateway.metrics import Metrics
from gateway.persistence import metrics as reads
from gateway.persistence.database import Database
from gateway.tenants.registry import TenantRegistry

__all__ = ["MeteredSettlement"]


class MeteredSettlement(Settlement):
    def __init__(
        self,
        db: Database,
        tenants: TenantRegistry,
        metrics: Metrics,
        clock: Clock = system_clock,
    ) -> None:
        super().__init__(db, tenants, clock)
        self._reads_db = db
        self._metrics = metrics

    async def book(self, payment_hash: bytes, *args: Any, **kwargs: Any) -> bool:
        # *args, **kwargs: whatever Settlement.book takes (settle index, node, …).
        booked = await super().book(payment_hash, *args, **kwargs)
        if booked:
            sale = await reads.settled_invoice(self._reads_db, payment_hash)
            if sale is not None:
                self._metrics.invoice_settled(sale.tenant_id, sale.kind, sale.amount_msat)
        return booked
