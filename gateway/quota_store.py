"""An account's quota right now: its free tier (its tenant's, or its own when larger, as
restored from the old service) or its best active plan."""

from __future__ import annotations

import time

from gateway.config import TenantSettings
from gateway.db import Database
from gateway.quota import Subscription, quota_limit


async def subscriptions(db: Database, account_id: str) -> list[Subscription]:
    rows = await db.fetch_all(
        "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
        " WHERE account_id = ? ORDER BY starts_at",
        (account_id,),
    )
    return [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


async def free_bytes(db: Database, tenant: TenantSettings, account_id: str) -> int:
    row = await db.fetch_one("SELECT free_quota_bytes FROM accounts WHERE id = ?", (account_id,))
    own = int(row[0]) if row is not None and row[0] is not None else 0
    return max(tenant.free_quota_bytes, own)


async def limit_bytes(db: Database, tenant: TenantSettings, account_id: str) -> int:
    return quota_limit(
        await free_bytes(db, tenant, account_id),
        await subscriptions(db, account_id),
        int(time.time()),
    )
