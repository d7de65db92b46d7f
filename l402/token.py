"""A paid L402 token as the client keeps it: macaroon, preimage and the chunks it covers.

Presented as ``Authorization: L402 <macaroon>:<preimage hex>``; saved with a download's
resume state as JSON (:meth:`Token.to_json`), and read back strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from l402.headers import MACAROON_TEXT_RE

__all__ = ["Token"]

_PREIMAGE_HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class Token:
    """A paid credential for chunks ``first..last`` (inclusive) of one file."""

    macaroon: str = field(repr=False)
    preimage: bytes = field(repr=False)
    first: int
    last: int
    valid_until: int | None = None
    # Served at least one chunk: a later refusal then means it expired, not that it was bad.
    used: bool = False

    def covers(self, index: int) -> bool:
        return self.first <= index <= self.last

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def authorization(self) -> str:
        return f"L402 {self.macaroon}:{self.preimage.hex()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "macaroon": self.macaroon,
            "preimage": self.preimage.hex(),
            "first": self.first,
            "last": self.last,
            "valid_until": self.valid_until,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        """Inverse of :meth:`to_json`; ValueError if anything is off."""
        macaroon, preimage = data.get("macaroon"), data.get("preimage")
        first, last, until = data.get("first"), data.get("last"), data.get("valid_until")
        if not isinstance(macaroon, str) or not MACAROON_TEXT_RE.fullmatch(macaroon):
            raise ValueError("bad macaroon")
        if not isinstance(preimage, str) or not _PREIMAGE_HEX_RE.fullmatch(preimage):
            raise ValueError("bad preimage")
        for value in (first, last):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("bad chunk range")
        assert isinstance(first, int) and isinstance(last, int)
        if first > last:
            raise ValueError("bad chunk range")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int)):
            raise ValueError("bad valid_until")
        # Loaded tokens may have served chunks before: treat a refusal as expiry.
        return cls(macaroon, bytes.fromhex(preimage), first, last, until, used=True)
