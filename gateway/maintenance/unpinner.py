"""Unpins the chunks of deleted files from kubo, retrying until kubo answers."""

from __future__ import annotations

import logging

from gateway.persistence.database import Database
from ipfs.kubo import KuboClient, KuboError

log = logging.getLogger("bitcache.unpinner")


class Unpinner:
    def __init__(self, db: Database, kubo: KuboClient) -> None:
        self._db = db
        self._kubo = kubo

    async def drain(self, batch: int = 500) -> int:
        """Unpins what it can now; returns how many. Stops quietly if kubo is down."""
        rows = await self._db.fetch_all(
            "SELECT cid FROM unpin_queue ORDER BY queued_at LIMIT ?", (batch,)
        )
        done = 0
        for row in rows:
            try:
                await self._kubo.pin_rm(row[0])
            except KuboError as exc:
                log.warning("unpin of %s deferred: %s", row[0], exc)
                break
            async with self._db.transaction() as conn:
                await conn.execute("DELETE FROM unpin_queue WHERE cid = ?", (row[0],))
            done += 1
        return done
