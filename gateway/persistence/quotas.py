"""Subscriptions (plans bought) and an account's quota at a given time.

The rules (how a purchase extends a plan, which limit applies) are in billing/quota.py and
pure; this module reads and writes the rows, joining the caller's transaction to add one.
"""

from __future__ import annotations

import aiosqlite

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


async def limit_bytes(db: Database, tenant: TenantSettings, account_id: str, now: int) -> int:
    """The account's quota at ``now``: its tenant's free tier or its best active plan."""
    return quota_limit(tenant.free_quota_bytes, await subscriptions(db, account_id), now)


async def plan_subscriptions(
    conn: aiosqlite.Connection, account_id: str, plan_id: str
) -> list[Subscription]:
    """The account's subscriptions to one plan, inside the caller's transaction."""
    async with conn.execute(
        "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
        " WHERE account_id = ? AND plan_id = ?",
        (account_id, plan_id),
    ) as cur:
        return [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) async for r in cur]


async def add_subscription(
    conn: aiosqlite.Connection, account_id: str, sub: Subscription, payment_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
        " payment_hash) VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, sub.plan_id, sub.quota_bytes, sub.starts_at, sub.ends_at, payment_hash),
    )
