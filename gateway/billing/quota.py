"""Storage quotas, plans and metering arithmetic (pure).

Times are unix seconds; a subscription covers the half-open interval [starts_at, ends_at).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SECONDS_PER_DAY",
    "OverQuota",
    "Plan",
    "Subscription",
    "byte_days",
    "byte_seconds",
    "check_reservation",
    "extend",
    "quota_limit",
]

SECONDS_PER_DAY = 86_400


class Plan(BaseModel):
    """A storage plan on sale: `quota_bytes` for `duration_s` seconds at `price_msat`."""

    # Strict: a price of 1.5 or "100" is a configuration error, not something to coerce.
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    name: str = Field(min_length=1)
    quota_bytes: int = Field(gt=0)
    duration_s: int = Field(gt=0)
    price_msat: int = Field(gt=0)


@dataclass(frozen=True)
class Subscription:
    """A bought plan: `quota_bytes` available from `starts_at` until just before `ends_at`."""

    plan_id: str
    quota_bytes: int
    starts_at: int
    ends_at: int

    def __post_init__(self) -> None:
        if self.quota_bytes <= 0:
            raise ValueError("quota_bytes must be positive")
        if self.ends_at <= self.starts_at:
            raise ValueError("a subscription must end after it starts")

    def active_at(self, now: int) -> bool:
        return self.starts_at <= now < self.ends_at


def extend(subscriptions: Sequence[Subscription], plan: Plan, now: int) -> Subscription:
    """The subscription that buying `plan` at `now` creates.

    Buying a plan already active or scheduled queues the new period after its latest end,
    so paying twice never wastes the time already paid for.
    """
    ends = [s.ends_at for s in subscriptions if s.plan_id == plan.id and s.ends_at > now]
    start = max(ends, default=now)
    return Subscription(plan.id, plan.quota_bytes, start, start + plan.duration_s)


def quota_limit(free_bytes: int, subscriptions: Sequence[Subscription], now: int) -> int:
    """Bytes an account may store at `now`: the best active plan, never below the free tier."""
    # Plans don't stack: the largest active one applies.
    active = (s.quota_bytes for s in subscriptions if s.active_at(now))
    return max(free_bytes, max(active, default=0))


class OverQuota(Exception):
    """An upload would take an account past its storage limit."""

    def __init__(self, used_bytes: int, requested_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"storage quota exceeded: {used_bytes} bytes used + {requested_bytes} requested"
            f" > limit {limit_bytes} bytes; buy a plan to raise it"
        )
        self.used_bytes = used_bytes
        self.requested_bytes = requested_bytes
        self.limit_bytes = limit_bytes


def check_reservation(used_bytes: int, requested_bytes: int, limit_bytes: int) -> None:
    """Raise OverQuota unless `requested_bytes` more still fit under `limit_bytes`."""
    # A negative request would shrink "used" and let a later upload slip past the limit.
    if used_bytes < 0 or requested_bytes < 0:
        raise ValueError("byte counts must be non-negative")
    if used_bytes + requested_bytes > limit_bytes:
        raise OverQuota(used_bytes, requested_bytes, limit_bytes)


def byte_seconds(stored_bytes: int, since: int, until: int) -> int:
    """Storage used over [since, until), in byte-seconds; 0 for an empty or reversed span."""
    if stored_bytes < 0:
        raise ValueError("stored_bytes must be non-negative")
    return stored_bytes * max(0, until - since)


def byte_days(byte_seconds: int) -> float:
    """Byte-seconds as byte-days, for display only (never bill from a float)."""
    return byte_seconds / SECONDS_PER_DAY
