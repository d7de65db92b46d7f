"""An account's quota right now: its tenant's free tier or its best active plan."""

from __future__ import annotations

import time

from gateway.billing.quota import Subscription, quota_limit
from gateway.config import TenantSettings
from gateway.persistence.database import Database


async def subscriptions(db: Database, account_id: str) -> list[Subscription]:
    rows = await db.fetch_all(
        "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
        " WHERE account_id = ? ORDER BY starts_at",
        (account_id,),
    )
    return [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


async def limit_bytes(db: Database, tenant: TenantSettings, account_id: str) -> int:
    return quota_limit(
        tenant.free_quota_bytes, await subscriptions(db, account_id), int(time.time())
    )
