"""A tenant's cap on what all its free-tier accounts store together.

Each new account gets the tenant's free quota, and accounts cost nothing to open, so the
free tier as a whole needs a ceiling of its own (`free_tier_total_bytes`). An account is
on the free tier while it has no active plan. The check runs inside the transaction that
reserves the file's bytes, so parallel uploads cannot overshoot the cap either.
"""

from __future__ import annotations

from gateway.persistence.database import Connection, Database

_FREE_TIER_LOCK = "free_tier_lock:"
_FREE_TIER_USED = (
    "SELECT COALESCE(SUM(a.used_bytes), 0) FROM accounts a WHERE a.tenant_id = ?"
    " AND NOT EXISTS (SELECT 1 FROM subscriptions s"
    " WHERE s.account_id = a.id AND s.starts_at <= ? AND s.ends_at > ?)"
)


class FreeTierFull(Exception):
    """The tenant's free tier as a whole has no room for this upload."""

    def __init__(self, used_bytes: int, requested_bytes: int, cap_bytes: int) -> None:
        super().__init__(
            f"this service's free storage is used up ({used_bytes} of {cap_bytes} bytes);"
            f" {requested_bytes} more do not fit: buy a plan to upload"
        )
        self.used_bytes = used_bytes
        self.requested_bytes = requested_bytes
        self.cap_bytes = cap_bytes


async def on_free_tier(db: Database, account_id: str, now: int) -> bool:
    row = await db.fetch_one(
        "SELECT 1 FROM subscriptions WHERE account_id = ? AND starts_at <= ? AND ends_at > ?",
        (account_id, now, now),
    )
    return row is None


async def check_free_tier(
    conn: Connection, tenant_id: str, requested_bytes: int, cap_bytes: int, now: int
) -> None:
    """Raises FreeTierFull unless `requested_bytes` more fit under the tenant's cap.

    The sum covers every account of the tenant, and the caller locks only its own: on
    PostgreSQL, two accounts uploading at once would both see room for one. So the check
    first takes the tenant's row in gateway_state (made on first use), which serialises
    free-tier reservations per tenant until the caller commits; SQLite's writer lock
    already does."""
    await conn.execute(
        "INSERT INTO gateway_state (key, value) VALUES (?, '') ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value",
        (_FREE_TIER_LOCK + tenant_id,),
    )
    async with conn.execute(_FREE_TIER_USED, (tenant_id, now, now)) as cur:
        row = await cur.fetchone()
    used = int(row[0]) if row else 0
    if used + requested_bytes > cap_bytes:
        raise FreeTierFull(used, requested_bytes, cap_bytes)
