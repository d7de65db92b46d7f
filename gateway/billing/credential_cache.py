"""A bounded LRU of credentials that verified fully, so a repeated token costs a lookup.

A download presents the same ``Authorization`` value for every chunk of a range it bought;
verifying it from scratch (base64, macaroon parse, seven HMAC/SHA-256 passes, caveats) each
time was most of a chunk request's CPU besides moving the bytes. Only a value that passed the
full check is stored, with what it grants (:class:`l402.Grant`); a hit re-checks the file,
the chunk and the expiry against the caller's clock, so a cached token expires exactly when
an uncached one would.

Entries are keyed by a keyed BLAKE2b digest of the exact header values (a random key per
process): the cache holds no credential (no preimage) and its dictionary compares digests,
never anything an attacker can steer byte by byte, so a lookup leaks nothing through timing
about the tokens stored. Pure logic, no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Sequence

from l402 import Grant

__all__ = ["DEFAULT_CAPACITY", "CredentialCache"]

# A grant is ~300 bytes with its key: 64 Ki entries stay under ~20 MB.
DEFAULT_CAPACITY = 65_536


class CredentialCache:
    """Authorization values that verified fully → what they grant; least recently used
    entries go first once ``capacity`` is reached."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, Grant] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, values: Sequence[str]) -> bytes:
        """The cache key of these exact header values (in order, each length-prefixed)."""
        h = hashlib.blake2b(key=self._key, digest_size=32)
        for value in values:
            raw = value.encode("utf-8", "surrogateescape")
            h.update(len(raw).to_bytes(4, "big"))
            h.update(raw)
        return h.digest()

    def get(self, key: bytes) -> Grant | None:
        grant = self._entries.get(key)
        if grant is not None:
            self._entries.move_to_end(key)
        return grant

    def put(self, key: bytes, grant: Grant) -> None:
        """Remember a grant; call only after the full verification succeeded."""
        self._entries[key] = grant
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._entries.pop(key, None)
