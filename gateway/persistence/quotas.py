"""Subscriptions (plans bought) and an account's quota at a given time.

The rules (how a purchase extends a plan, which limit applies) are in billing/quota.py and
pure; this module reads and writes the rows, joining the caller's transaction to add one.
"""

from __future__ import annotations

from gateway.billing.quota import Subscription, quota_limit
from gateway.config import TenantSettings
from gateway.persistence.database import Connection, Database


async def subscriptions(db: Database, account_id: str) -> list[Subscription]:
    rows = await db.fetch_all(
        "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
        " WHERE account_id = ? ORDER BY starts_at",
        (account_id,),
    )
    return [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


async def free_bytes(db: Database, tenant: TenantSettings, account_id: str) -> int:
    """The account's free tier: its tenant's, or its own when larger (as restored from the
    old service by the legacy import)."""
    row = await db.fetch_one("SELECT free_quota_bytes FROM accounts WHERE id = ?", (account_id,))
    own = int(row[0]) if row is not None and row[0] is not None else 0
    return max(tenant.free_quota_bytes, own)


async def limit_bytes(db: Database, tenant: TenantSettings, account_id: str, now: int) -> int:
    """The account's quota at ``now``: its free tier or its best active plan."""
    return quota_limit(
        await free_bytes(db, tenant, account_id), await subscriptions(db, account_id), now
    )


async def plan_subscriptions(conn: Connection, account_id: str, plan_id: str) -> list[Subscription]:
    """The account's subscriptions to one plan, inside the caller's transaction.

    Locks the account's row first (PostgreSQL), so two purchases settling at once extend
    the plan one after the other rather than both from the same end date."""
    await conn.execute("SELECT id FROM accounts WHERE id = ? FOR UPDATE", (account_id,))
    async with conn.execute(
        "SELECT plan_id, quota_bytes, starts_at, ends_at FROM subscriptions"
        " WHERE account_id = ? AND plan_id = ?",
        (account_id, plan_id),
    ) as cur:
        return [Subscription(r[0], int(r[1]), int(r[2]), int(r[3])) async for r in cur]


async def add_subscription(
    conn: Connection, account_id: str, sub: Subscription, payment_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at, ends_at,"
        " payment_hash) VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, sub.plan_id, sub.quota_bytes, sub.starts_at, sub.ends_at, payment_hash),
    )
