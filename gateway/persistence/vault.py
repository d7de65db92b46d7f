"""The vault's rows: wrapped keys, opaque tree objects and the per-account change counter.

Writes are compare-and-set on the counter, so two devices never overwrite each other
unknowingly. Object bytes count against the account's quota like file bytes.

A write may also replace the vault's deletion log (sealed by the client) and delete chunk
files of the account in the same transaction: the vault's garbage collection
(docs/format.md §14.9). Tying the deletion to the compare-and-set is what makes it safe:
a device that names a chunk in a new object writes at a counter after it made sure the chunk
exists, so a collection decided on an older view of the tree is refused instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.billing.quota import check_reservation
from gateway.persistence.database import Connection, Database
from gateway.persistence.files import delete_files as delete_files_in


class CounterMismatch(Exception):
    """The writer's view of the vault is stale: it must read the changes and merge first."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the vault is at change {current}")
        self.current = current


class NotOwnFile(Exception):
    """A collection named a file another account owns: nothing of the batch is written."""


@dataclass(frozen=True)
class DeletionLog:
    counter: int  # the change that last wrote it
    data: bytes


@dataclass(frozen=True)
class VaultObject:
    id: str
    counter: int
    data: bytes | None  # None: removed


@dataclass(frozen=True)
class Changes:
    counter: int  # read up to here (the vault's counter unless `more`)
    objects: list[VaultObject]
    more: bool
    log: DeletionLog | None = None  # when written after `since`


async def _counter(conn: Connection, account_id: str) -> int:
    async with conn.execute("SELECT counter FROM vaults WHERE account_id = ?", (account_id,)) as c:
        row = await c.fetchone()
    return int(row[0]) if row else 0


async def _log_size(conn: Connection, account_id: str) -> int:
    async with conn.execute(
        "SELECT LENGTH(gc_log) FROM vaults WHERE account_id = ?", (account_id,)
    ) as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def _check_own(conn: Connection, account_id: str, file_ids: Sequence[str]) -> None:
    """NotOwnFile if any of these files exists and is not the account's."""
    marks = ",".join("?" * len(file_ids))
    async with conn.execute(
        f"SELECT id FROM files WHERE id IN ({marks}) AND (owner_id IS NULL OR owner_id != ?)",
        (*file_ids, account_id),
    ) as cur:
        foreign = [r[0] async for r in cur]
    if foreign:
        raise NotOwnFile(f"file {foreign[0]} is not this account's")


class VaultStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def counter(self, account_id: str) -> int:
        row = await self.db.fetch_one(
            "SELECT counter FROM vaults WHERE account_id = ?", (account_id,)
        )
        return int(row[0]) if row else 0

    async def key_names(self, account_id: str) -> list[str]:
        rows = await self.db.fetch_all(
            "SELECT name FROM vault_keys WHERE account_id = ? ORDER BY name", (account_id,)
        )
        return [r[0] for r in rows]

    async def get_key(self, account_id: str, name: str) -> bytes | None:
        row = await self.db.fetch_one(
            "SELECT wrapped FROM vault_keys WHERE account_id = ? AND name = ?", (account_id, name)
        )
        return bytes(row[0]) if row else None

    async def put_key(self, account_id: str, name: str, wrapped: bytes, create_only: bool) -> bool:
        """Stores a wrapped key; False (nothing changed) if ``create_only`` and it exists."""
        async with self.db.transaction() as conn:
            if create_only:
                cur = await conn.execute(
                    "INSERT OR IGNORE INTO vault_keys (account_id, name, wrapped, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (account_id, name, wrapped, int(time.time())),
                )
                return cur.rowcount == 1
            await conn.execute(
                "INSERT INTO vault_keys (account_id, name, wrapped, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account_id, name) DO UPDATE SET wrapped = excluded.wrapped",
                (account_id, name, wrapped, int(time.time())),
            )
            return True

    async def delete_key(self, account_id: str, name: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM vault_keys WHERE account_id = ? AND name = ?", (account_id, name)
            )
            return cur.rowcount == 1

    async def changes(self, account_id: str, since: int, limit: int) -> Changes:
        """Objects written after change ``since``, whole batches only, about ``limit`` of them."""
        current = await self.counter(account_id)
        rows = await self.db.fetch_all(
            "SELECT object_id, counter, data FROM vault_objects"
            " WHERE account_id = ? AND counter > ? ORDER BY counter, object_id LIMIT ?",
            (account_id, since, limit + 1),
        )
        more = len(rows) > limit
        if more:
            last = int(rows[limit - 1][1])
            rows = [r for r in rows if int(r[1]) < last]
            if not rows:  # one batch larger than a page: send it whole
                rows = await self.db.fetch_all(
                    "SELECT object_id, counter, data FROM vault_objects"
                    " WHERE account_id = ? AND counter = ? ORDER BY object_id",
                    (account_id, last),
                )
            upto = int(rows[-1][1])
        else:
            upto = max(current, int(rows[-1][1])) if rows else current
        objects = [
            VaultObject(r[0], int(r[1]), bytes(r[2]) if r[2] is not None else None) for r in rows
        ]
        # Read after the objects: it is then at least as new as every change up to `upto`
        # (a newer one only makes a device forget more of its journal, which is safe).
        row = await self.db.fetch_one(
            "SELECT gc_log, gc_log_counter FROM vaults WHERE account_id = ?", (account_id,)
        )
        log = None
        if row is not None and row[0] is not None and int(row[1]) > since:
            log = DeletionLog(int(row[1]), bytes(row[0]))
        return Changes(upto, objects, more, log)

    async def write(
        self,
        account_id: str,
        if_counter: int,
        put: Sequence[tuple[str, bytes]],
        remove: Sequence[str],
        limit_bytes: int,
        log: bytes | None = None,
        delete_files: Sequence[str] = (),
    ) -> int:
        """Applies one batch if the vault is still at ``if_counter``; returns the new counter.
        With ``log``, the deletion log is replaced; ``delete_files`` (the account's own chunk
        files; unknown or already deleted ones are skipped) are deleted in the same
        transaction, their bytes freed and their pins left to the unpinner.

        Raises CounterMismatch (nothing written), NotOwnFile or quota.OverQuota."""
        now = int(time.time())
        async with self.db.transaction() as conn:
            # The account's row locked first (PostgreSQL; SQLite's writer lock covers it):
            # concurrent batches then compare-and-set the counter and reserve quota one
            # after the other, as they do on SQLite.
            await conn.execute("SELECT id FROM accounts WHERE id = ? FOR UPDATE", (account_id,))
            current = await _counter(conn, account_id)
            if current != if_counter:
                raise CounterMismatch(current)
            new = current + 1
            ids = [oid for oid, _ in put] + list(remove)
            old: dict[str, int] = {}
            if ids:
                marks = ",".join("?" * len(ids))
                async with conn.execute(
                    "SELECT object_id, LENGTH(data) FROM vault_objects"
                    f" WHERE account_id = ? AND object_id IN ({marks})",
                    (account_id, *ids),
                ) as cur:
                    old = {r[0]: int(r[1] or 0) async for r in cur}
            delta = sum(len(data) for _, data in put) - sum(old.get(i, 0) for i in ids)
            if log is not None:
                delta += len(log) - await _log_size(conn, account_id)
            if delete_files:
                await _check_own(conn, account_id, delete_files)
            if delta > 0:
                async with conn.execute(
                    "SELECT used_bytes FROM accounts WHERE id = ?", (account_id,)
                ) as cur:
                    row = await cur.fetchone()
                assert row is not None, "account must exist"
                check_reservation(int(row[0]), delta, limit_bytes)
            await conn.execute(
                "UPDATE accounts SET used_bytes = MAX(0, used_bytes + ?) WHERE id = ?",
                (delta, account_id),
            )
            await conn.execute(
                "INSERT INTO vaults (account_id, counter, object_bytes, created_at)"
                " VALUES (?, ?, MAX(0, CAST(? AS BIGINT)), ?) ON CONFLICT (account_id) DO UPDATE"
                " SET counter = excluded.counter,"
                " object_bytes = MAX(0, vaults.object_bytes + ?)",
                (account_id, new, delta, now, delta),
            )
            await conn.executemany(
                "INSERT INTO vault_objects (account_id, object_id, counter, data)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (account_id, object_id)"
                " DO UPDATE SET counter = excluded.counter, data = excluded.data",
                [(account_id, oid, new, data) for oid, data in put]
                + [(account_id, oid, new, None) for oid in remove],
            )
            if log is not None:
                await conn.execute(
                    "UPDATE vaults SET gc_log = ?, gc_log_counter = ? WHERE account_id = ?",
                    (log, new, account_id),
                )
            if delete_files:
                # The account's row is locked above: the owner lock delete_files expects.
                await delete_files_in(conn, sorted(set(delete_files)))
        return new
