"""BlockStore: what the gateway asks of IPFS, whichever node or cluster answers.

``kubo.KuboClient`` (one kubo node's RPC API) is the first implementation; IPFS Cluster
will be another, chosen in the gateway's composition root. Only ciphertext passes through.
Failures are ``ipfs.errors``: IpfsUnavailable (retry later), IpfsNotFound, IpfsError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["BlockStore"]


class BlockStore(Protocol):
    """Content-addressed storage of the gateway's chunks."""

    async def add(self, data: bytes, pin: bool = True) -> str:
        """Stores ``data`` (pinned unless told otherwise); returns its CID (v1)."""
        ...

    async def cat(self, cid: str) -> bytes:
        """The whole content of ``cid``."""
        ...

    def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The content of ``cid`` in pieces of at most ``block`` bytes."""
        ...

    async def pin_add(self, cid: str) -> None:
        """Keeps ``cid`` from garbage collection."""
        ...

    async def pin_rm(self, cid: str) -> None:
        """Lets ``cid`` be collected; not an error if it was not pinned."""
        ...

    async def stat_size(self, cid: str) -> int:
        """The content's size in bytes, without fetching it."""
        ...

    async def version(self) -> str:
        """The store's software version (health checks)."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be used again afterwards."""
        ...
