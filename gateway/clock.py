"""The clock, passed in wherever expiry is decided (tokens, invoices, withdrawals, quotas).

Production uses the system's wall clock; tests pass their own to move time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "system_clock"]

Clock = Callable[[], float]
"""Unix time in seconds, like :func:`time.time`."""

system_clock: Clock = time.time
