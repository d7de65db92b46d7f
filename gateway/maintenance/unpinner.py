"""Unpins CIDs no chunk uses any more from kubo, retrying until kubo answers.

Reference counts live in the `pins` table (gateway/persistence/pins.py): only a CID at zero is
unpinned, so deleting one file never unpins ciphertext another file still uses.
"""

from __future__ import annotations

import logging

from gateway.persistence import pins
from gateway.persistence.database import Database
from ipfs.errors import IpfsError
from ipfs.store import BlockStore

log = logging.getLogger("bitcache.unpinner")


class Unpinner:
    """Unpins from the block store the CIDs whose reference count fell to zero."""

    def __init__(self, db: Database, store: BlockStore) -> None:
        self._db = db
        self._store = store

    async def drain(self, batch: int = 500, only: list[str] | None = None) -> int:
        """Unpins what it can now (all unreferenced CIDs, or those of `only` that are);
        returns how many. Stops quietly if kubo is down."""
        if only is not None and not only:
            return 0
        async with self._db.transaction() as conn:
            cids = await pins.unreferenced(conn, batch, only)
        done = 0
        for cid in cids:
            try:
                await self._store.pin_rm(cid)
            except IpfsError as exc:
                log.warning("unpin of %s deferred: %s", cid, exc)
                break
            async with self._db.transaction() as conn:
                forgotten = await pins.forget_if_unreferenced(conn, cid)
            if not forgotten:
                # A chunk took a reference while kubo was unpinning: pin it back.
                try:
                    await self._store.pin_add(cid)
                except IpfsError:
                    log.error("%s is referenced again but could not be re-pinned", cid)
                    raise
                continue
            done += 1
        return done
