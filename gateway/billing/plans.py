"""Selling a plan: an invoice on the tenant's node and the row that settlement books.

The row records the plan's terms as sold (price, quota, duration), so a plan changed or
removed from the catalogue before the buyer pays is still honoured as sold. The
subscription it grants (extended from any current one) is made when the invoice settles,
in settlement.py.
"""

from __future__ import annotations

from gateway.billing.quota import Plan
from gateway.clock import Clock
from gateway.config import TenantSettings
from gateway.persistence import invoices
from gateway.persistence.database import Database
from lightning.models import Invoice
from lightning.node import LightningNode

__all__ = ["sell_plan"]


async def sell_plan(
    db: Database,
    node: LightningNode,
    invoice_expiry_s: int,
    tenant: TenantSettings,
    account_id: str,
    plan: Plan,
    clock: Clock,
    node_id: str,
) -> Invoice:
    """The invoice that buys ``plan`` for the account, recorded for settlement with the
    identity of the node that issued it (``node_id``)."""
    invoice = await node.create_invoice(
        plan.price_msat,
        f"{tenant.display_name} plan: {plan.name}",
        expiry_s=invoice_expiry_s,
    )
    async with db.transaction() as conn:
        await invoices.add_plan_invoice(
            conn,
            invoice.payment_hash,
            account_id,
            plan,
            invoice.bolt11,
            int(clock()),
            tenant.id,
            node_id,
        )
    return invoice
