"""Unpins the chunks of deleted files from kubo, retrying until kubo answers."""

from __future__ import annotations

import logging

from gateway.persistence import unpins
from gateway.persistence.database import Database
from ipfs.errors import IpfsError
from ipfs.store import BlockStore

log = logging.getLogger("bitcache.unpinner")


class Unpinner:
    """Drains the unpin queue into the block store."""

    def __init__(self, db: Database, store: BlockStore) -> None:
        self._db = db
        self._store = store

    async def drain(self, batch: int = 500) -> int:
        """Unpins what it can now; returns how many. Stops quietly if the store is down."""
        done = 0
        for cid in await unpins.queued(self._db, batch):
            try:
                await self._store.pin_rm(cid)
            except IpfsError as exc:
                log.warning("unpin of %s deferred: %s", cid, exc)
                break
            async with self._db.transaction() as conn:
                await unpins.remove(conn, cid)
            done += 1
        return done
