"""The gateway's record of files and their ciphertext chunks (SQLite)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.billing.quota import check_reservation
from gateway.persistence import pins
from gateway.persistence.database import Connection, Database, Row
from gateway.persistence.free_tier import check_free_tier
from storage.crypto import CHUNK_OVERHEAD, FileHeader, encode_file_id, sealed_chunk_size


class ChunkConflict(Exception):
    """Different bytes for a chunk that is already stored (chunks are immutable)."""


class FileConflict(Exception):
    """The file id exists with another header or manifest."""


class FileGone(Exception):
    """The file was deleted by its owner (perhaps while this request was running)."""


@dataclass(frozen=True)
class FileRecord:
    id: str
    state: str
    header: FileHeader
    manifest: bytes
    price_msat: int
    owner_id: str | None
    stored_bytes: int
    tenant_id: str

    @property
    def chunk_count(self) -> int:
        return self.header.chunk_count

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def deleted(self) -> bool:
        return self.state == "deleted"

    def sealed_size(self, index: int) -> int:
        return sealed_chunk_size(index, self.header.plaintext_size, self.header.chunk_size)


@dataclass(frozen=True)
class ChunkRecord:
    cid: str
    size: int


@dataclass(frozen=True)
class NewChunkFile:
    """One item of a batch of single-chunk files, its chunk already added as ``cid``."""

    header: FileHeader
    manifest: bytes
    cid: str
    size: int


@dataclass
class BatchRecorded:
    """What a batch did: file ids stored now, ids already complete, and the CIDs whose pin
    reference is the first (the caller pins them again after commit, see pins.py)."""

    stored: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    first_references: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileUsage:
    """One file's storage and sales, for its owner's usage report."""

    id: str
    state: str
    stored_bytes: int
    created_at: int
    deleted_at: int | None
    bytes_served: int
    chunks_sold: int
    earned_msat: int


def stored_size(header: FileHeader, manifest: bytes) -> int:
    """Bytes a file takes on the gateway: every sealed chunk plus the sealed manifest."""
    return header.plaintext_size + CHUNK_OVERHEAD * header.chunk_count + len(manifest)


def _header_json(header: FileHeader) -> str:
    return json.dumps(header.to_json_dict(), sort_keys=True, separators=(",", ":"))


# What _record reads.
_RECORD_COLUMNS = (
    "f.id, f.state, f.header, f.manifest, f.price_msat, f.owner_id, f.stored_bytes, f.tenant_id"
)
_SELECT_RECORD = f"SELECT {_RECORD_COLUMNS} FROM files f WHERE f.id = ?"
_SELECT_RECORD_AND_CHUNK = (
    f"SELECT {_RECORD_COLUMNS}, c.cid, c.size FROM files f"
    " LEFT JOIN chunks c ON c.file_id = f.id AND c.idx = ? WHERE f.id = ?"
)


def _record(row: Row) -> FileRecord:
    return FileRecord(
        id=row["id"],
        state=row["state"],
        header=FileHeader.from_json_dict(json.loads(row["header"])),
        manifest=bytes(row["manifest"]),
        price_msat=int(row["price_msat"]),
        owner_id=row["owner_id"],
        stored_bytes=int(row["stored_bytes"]),
        tenant_id=row["tenant_id"],
    )


async def _lock_owner(conn: Connection, owner_id: str) -> int:
    """The owner's used bytes, its row locked first (PostgreSQL; SQLite's writer lock covers
    it): one owner's creates and batches then reserve one after another, each seeing the
    bytes the one before reserved, and the file rows as they now stand."""
    async with conn.execute(
        "SELECT used_bytes FROM accounts WHERE id = ? FOR UPDATE", (owner_id,)
    ) as cur:
        account = await cur.fetchone()
    assert account is not None, "owner must exist"
    return int(account[0])


def _check_same_file(
    file_id: str, row: Row, header_json: str, manifest: bytes, owner_id: str, tenant_id: str
) -> bool:
    """FileConflict unless the stored file is this one (same header and manifest), by this
    owner, in this tenant. True if it is the owner's own deleted file, to be re-created.

    Another account gets the same refusal whether the id is live or deleted, so it can
    neither take an id nor learn from the answer whose it was; and a re-create brings back
    the file as it was (same key commitment, size and manifest), never another file."""
    if (
        row["header"] != header_json
        or bytes(row["manifest"]) != manifest
        or row["owner_id"] != owner_id
        or row["tenant_id"] != tenant_id
    ):
        raise FileConflict(f"file {file_id} exists with a different header")
    return bool(row["state"] == "deleted")


async def _revive(conn: Connection, file_id: str, state: str, size: int, at: int) -> None:
    """The owner's deleted file made live again (its chunks sent again from nothing: delete
    dropped its chunk rows). Only from 'deleted', under the owner's lock, so the bytes are
    reserved exactly once; the price and sales so far stay as they were."""
    revived = await conn.execute(
        "UPDATE files SET state = ?, stored_bytes = ?, created_at = ?, completed_at = ?,"
        " deleted_at = NULL WHERE id = ? AND state = 'deleted'",
        (state, size, at, at if state == "complete" else None, file_id),
    )
    if revived.rowcount != 1:  # cannot happen under the owner's lock; refuse rather than guess
        raise FileConflict(f"file {file_id} changed while it was being re-created")


async def _reserve(
    conn: Connection,
    owner_id: str,
    used: int,
    size: int,
    limit_bytes: int,
    tenant_id: str,
    free_tier_cap: int | None,
    at: int,
) -> None:
    """Adds ``size`` to the owner's used bytes if its quota (and, with ``free_tier_cap``,
    the tenant's free tier at ``at``) has room; OverQuota or FreeTierFull otherwise."""
    check_reservation(used, size, limit_bytes)
    if free_tier_cap is not None:
        await check_free_tier(conn, tenant_id, size, free_tier_cap, at)
    await conn.execute(
        "UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?", (size, owner_id)
    )


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        header: FileHeader,
        manifest: bytes,
        price_msat: int,
        owner_id: str,
        limit_bytes: int,
        tenant_id: str,
        free_tier_cap: int | None = None,
        now: int | None = None,
    ) -> tuple[FileRecord, bool]:
        """Creates the file and reserves its whole size against the owner's quota, in one
        transaction, so parallel uploads can never overshoot; or returns the existing
        identical file (created=False). With `free_tier_cap` (the owner is on the free
        tier) the tenant's free tier as a whole must have room too, counting the accounts
        with no plan active at `now`. Raises quota.OverQuota, free_tier.FreeTierFull or
        FileConflict."""
        file_id = encode_file_id(header.file_id)
        header_json = _header_json(header)
        size = stored_size(header, manifest)
        async with self.db.transaction() as conn:
            used = await _lock_owner(conn, owner_id)
            async with conn.execute(
                "SELECT header, manifest, owner_id, state, tenant_id FROM files WHERE id = ?",
                (file_id,),
            ) as cur:
                row = await cur.fetchone()
            at = int(time.time()) if now is None else now
            if row is not None and _check_same_file(
                file_id, row, header_json, manifest, owner_id, tenant_id
            ):
                # The owner's own deleted file (a vault chunk collected, then needed again).
                await _reserve(
                    conn, owner_id, used, size, limit_bytes, tenant_id, free_tier_cap, at
                )
                await _revive(conn, file_id, "uploading", size, at)
                created = True
            elif row is not None:
                created = False
            else:
                await _reserve(
                    conn, owner_id, used, size, limit_bytes, tenant_id, free_tier_cap, at
                )
                inserted = await conn.execute(
                    "INSERT INTO files (id, state, header, manifest, chunk_count, price_msat,"
                    " created_at, owner_id, stored_bytes, tenant_id)"
                    " VALUES (?, 'uploading', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (
                        file_id,
                        header_json,
                        manifest,
                        header.chunk_count,
                        price_msat,
                        int(time.time()),
                        owner_id,
                        size,
                        tenant_id,
                    ),
                )
                if inserted.rowcount == 0:  # another owner created it meanwhile
                    raise FileConflict(f"file {file_id} exists with a different header")
                created = True
            # Read back in the same transaction: it sees its own write, whatever any
            # reader's snapshot holds.
            async with conn.execute(_SELECT_RECORD, (file_id,)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return _record(row), created

    async def record_batch(
        self,
        items: Sequence[NewChunkFile],
        owner_id: str,
        limit_bytes: int,
        tenant_id: str,
        free_tier_cap: int | None = None,
        now: int | None = None,
    ) -> BatchRecorded:
        """Records many free single-chunk files and their (already added) chunks in ONE
        transaction: the new ones are created complete, an identical one still uploading
        gets its chunk and is completed, an identical complete one is left as it is. The
        quota (and free tier) is checked once for all the new bytes; the owner's own deleted
        file is stored again as new. Raises FileConflict (an id exists with another header
        or manifest, or another owner),
        ChunkConflict, quota.OverQuota or free_tier.FreeTierFull, and then nothing of the
        batch is written; the caller releases the CIDs it added."""
        at = int(time.time()) if now is None else now
        ids = [encode_file_id(item.header.file_id) for item in items]
        out = BatchRecorded()
        async with self.db.transaction() as conn:
            used = await _lock_owner(conn, owner_id)
            marks = ",".join("?" * len(ids))
            async with conn.execute(
                "SELECT id, header, manifest, owner_id, state, tenant_id FROM files"
                f" WHERE id IN ({marks})",
                ids,
            ) as cur:
                rows = {str(r["id"]): r async for r in cur}
            fresh: list[tuple[str, NewChunkFile]] = []
            revive: set[str] = set()
            for file_id, item in zip(ids, items, strict=True):
                row = rows.get(file_id)
                if row is None:
                    fresh.append((file_id, item))
                    continue
                header_json = _header_json(item.header)
                if _check_same_file(file_id, row, header_json, item.manifest, owner_id, tenant_id):
                    fresh.append((file_id, item))  # the owner's deleted file, stored again
                    revive.add(file_id)
                    continue
                if row["state"] == "complete":
                    out.existing.append(file_id)
                    continue
                # Left uploading by the single path (a killed client): finish it here.
                await self._record_chunk(conn, file_id, item, out)
                await conn.execute(
                    "UPDATE files SET state = 'complete', completed_at = ?"
                    " WHERE id = ? AND state = 'uploading'",
                    (at, file_id),
                )
                out.stored.append(file_id)
            size = sum(stored_size(item.header, item.manifest) for _, item in fresh)
            if fresh:
                await _reserve(
                    conn, owner_id, used, size, limit_bytes, tenant_id, free_tier_cap, at
                )
            for file_id, item in fresh:
                if file_id in revive:
                    await _revive(
                        conn, file_id, "complete", stored_size(item.header, item.manifest), at
                    )
                    await self._record_chunk(conn, file_id, item, out)
                    out.stored.append(file_id)
                    continue
                inserted = await conn.execute(
                    "INSERT INTO files (id, state, header, manifest, chunk_count, price_msat,"
                    " created_at, completed_at, owner_id, stored_bytes, tenant_id)"
                    " VALUES (?, 'complete', ?, ?, 1, 0, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    (
                        file_id,
                        _header_json(item.header),
                        item.manifest,
                        at,
                        at,
                        owner_id,
                        stored_size(item.header, item.manifest),
                        tenant_id,
                    ),
                )
                if inserted.rowcount == 0:  # another owner created it meanwhile
                    raise FileConflict(f"file {file_id} exists with a different header")
                await self._record_chunk(conn, file_id, item, out)
                out.stored.append(file_id)
        return out

    @staticmethod
    async def _record_chunk(
        conn: Connection, file_id: str, item: NewChunkFile, out: BatchRecorded
    ) -> None:
        inserted = await conn.execute(
            "INSERT INTO chunks (file_id, idx, cid, size) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (file_id, idx) DO NOTHING",
            (file_id, item.cid, item.size),
        )
        if inserted.rowcount == 1:
            if await pins.reference(conn, item.cid) == 1:
                out.first_references.append(item.cid)
            return
        async with conn.execute(
            "SELECT cid FROM chunks WHERE file_id = ? AND idx = 0", (file_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is not None and row["cid"] != item.cid:
            raise ChunkConflict(f"chunk 0 of {file_id} is already stored")

    async def delete(self, file_id: str) -> list[str]:
        """Marks the file deleted, frees its bytes and drops its chunks' pin references (a
        CID no other chunk uses is left for the unpinner). Returns the file's chunk CIDs.
        Invoices and ledger entries stay: they are history. Its owner may create the same
        file again later (:meth:`create`)."""
        row = await self.db.fetch_one("SELECT owner_id FROM files WHERE id = ?", (file_id,))
        if row is None:
            return []
        async with self.db.transaction() as conn:
            if row[0] is not None:
                await _lock_owner(conn, str(row[0]))  # first, as create and the vault's GC do
            return await delete_files(conn, [file_id])

    async def add_served(self, totals: Mapping[str, int]) -> None:
        """Adds bytes served to many files in one transaction (the meter's batch)."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE files SET bytes_served = bytes_served + ? WHERE id = ?",
                [(size, file_id) for file_id, size in totals.items()],
            )

    async def usage(self, owner_id: str) -> list[FileUsage]:
        """Every file the account uploaded, oldest first, deleted ones included."""
        rows = await self.db.fetch_all(
            "SELECT id, state, stored_bytes, created_at, deleted_at, bytes_served, chunks_sold,"
            " earned_msat FROM files WHERE owner_id = ? ORDER BY created_at",
            (owner_id,),
        )
        return [
            FileUsage(
                r["id"],
                r["state"],
                int(r["stored_bytes"]),
                int(r["created_at"]),
                None if r["deleted_at"] is None else int(r["deleted_at"]),
                int(r["bytes_served"]),
                int(r["chunks_sold"]),
                int(r["earned_msat"]),
            )
            for r in rows
        ]

    async def get(self, file_id: str) -> FileRecord | None:
        row = await self.db.fetch_one(_SELECT_RECORD, (file_id,))
        return None if row is None else _record(row)

    async def states(self, file_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """(state, owner) of each of these files that exists."""
        if not file_ids:
            return {}
        marks = ",".join("?" * len(file_ids))
        rows = await self.db.fetch_all(
            f"SELECT id, state, owner_id FROM files WHERE id IN ({marks})", list(file_ids)
        )
        return {str(r["id"]): (str(r["state"]), r["owner_id"]) for r in rows}

    async def get_with_chunk(
        self, file_id: str, index: int
    ) -> tuple[FileRecord, ChunkRecord | None] | None:
        """The file and its chunk ``index`` in one query (one round trip per chunk served
        instead of two); None if there is no such file."""
        row = await self.db.fetch_one(_SELECT_RECORD_AND_CHUNK, (index, file_id))
        if row is None:
            return None
        chunk = None if row["cid"] is None else ChunkRecord(row["cid"], int(row["size"]))
        return _record(row), chunk

    async def chunk_run(self, file_id: str, first: int, last: int) -> list[ChunkRecord]:
        """The recorded chunks first..last of a file, in order (missing ones left out)."""
        rows = await self.db.fetch_all(
            "SELECT cid, size FROM chunks WHERE file_id = ? AND idx BETWEEN ? AND ? ORDER BY idx",
            (file_id, first, last),
        )
        return [ChunkRecord(row["cid"], int(row["size"])) for row in rows]

    async def pin_epoch(self) -> int:
        """Read before adding a chunk's bytes, for :meth:`put_chunk`."""
        row = await self.db.fetch_one("SELECT n FROM pin_epoch WHERE id = 1")
        return 0 if row is None else int(row[0])

    async def put_chunk(
        self, file_id: str, index: int, cid: str, size: int, epoch: int | None = None
    ) -> tuple[bool, bool]:
        """Records a stored chunk and its pin reference in one transaction.

        Returns (created, repin): created is False if the chunk was already there with the
        same CID; repin tells the caller to make sure the CID is pinned: the reference is
        the first and the pin epoch is no longer ``epoch``, read before the bytes were added
        (None: unknown, so any first reference re-pins; see gateway/persistence/pins.py).
        Raises ChunkConflict (other bytes are stored there) or
        FileGone (the file was deleted meanwhile); either way the pin the caller took by
        adding `cid` is released unless another chunk uses it."""
        async with self.db.transaction() as conn:
            # The file row is share-locked (PostgreSQL), so a delete waits for this PUT to
            # commit and then removes its chunk too; PUTs of other chunks still run together.
            async with conn.execute(
                "SELECT state FROM files WHERE id = ? FOR SHARE", (file_id,)
            ) as cur:
                file_row = await cur.fetchone()
            if file_row is None or file_row["state"] == "deleted":
                refused: Exception = FileGone(f"file {file_id} was deleted by its owner")
            else:
                # Insert first: of two parallel PUTs of one chunk, exactly one adds the row.
                inserted = await conn.execute(
                    "INSERT INTO chunks (file_id, idx, cid, size) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (file_id, idx) DO NOTHING",
                    (file_id, index, cid, size),
                )
                if inserted.rowcount == 1:
                    first = await pins.reference(conn, cid) == 1
                    # Read after the reference: see pins.py for why that order is safe.
                    return True, first and (epoch is None or await pins.epoch(conn) != epoch)
                async with conn.execute(
                    "SELECT cid FROM chunks WHERE file_id = ? AND idx = ?", (file_id, index)
                ) as cur:
                    row = await cur.fetchone()
                if row is None or row["cid"] == cid:
                    return False, False
                refused = ChunkConflict(f"chunk {index} of {file_id} is already stored")
            # Committed with the transaction, so the refusal cannot lose the release.
            await pins.release_unrecorded(conn, cid)
        raise refused

    async def missing(self, file_id: str, chunk_count: int, limit: int = 1000) -> list[int]:
        return (await self.progress(file_id, chunk_count, limit))[1]

    async def progress(
        self, file_id: str, chunk_count: int, limit: int = 1000
    ) -> tuple[int, list[int]]:
        """How many chunks are stored, and the first ``limit`` missing ones, from one
        query. Only the file's state needs this: :meth:`get`, on every chunk request, does
        not count (a COUNT per chunk PUT would make an upload quadratic in its chunks)."""
        rows = await self.db.fetch_all(
            "SELECT idx FROM chunks WHERE file_id = ? ORDER BY idx", (file_id,)
        )
        present = {int(r["idx"]) for r in rows}
        out: list[int] = []
        for index in range(chunk_count):
            if index not in present:
                out.append(index)
                if len(out) >= limit:
                    break
        return len(present), out

    async def mark_complete(self, file_id: str, chunk_count: int) -> list[int]:
        """Marks the file complete if every chunk is present; returns the missing ones.
        Raises FileGone if the file was deleted (perhaps after the caller loaded it)."""
        async with self.db.transaction() as conn:
            # Locked (PostgreSQL): a delete committing meanwhile would otherwise leave this
            # answering "complete" for a deleted file; PUTs in flight finish first.
            async with conn.execute(
                "SELECT state FROM files WHERE id = ? FOR UPDATE", (file_id,)
            ) as cur:
                state = await cur.fetchone()
            if state is None or state[0] == "deleted":
                raise FileGone(f"file {file_id} was deleted by its owner")
            async with conn.execute(
                "SELECT COUNT(*) FROM chunks WHERE file_id = ?", (file_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is not None and int(row[0]) == chunk_count:
                await conn.execute(
                    "UPDATE files SET state = 'complete', completed_at = ?"
                    " WHERE id = ? AND state = 'uploading'",
                    (int(time.time()), file_id),
                )
                return []
        return await self.missing(file_id, chunk_count)


async def delete_files(conn: Connection, file_ids: Sequence[str]) -> list[str]:
    """Deletes these files (those not deleted yet) in the caller's transaction: frees their
    bytes from their owners, once each, and drops their chunks' pin references. Returns the
    CIDs of the chunks dropped (the unpinner unpins those nothing else uses). The caller
    holds the owners' locks (:func:`_lock_owner`)."""
    now = int(time.time())
    cids: list[str] = []
    for file_id in file_ids:
        async with conn.execute(
            "UPDATE files SET state = 'deleted', deleted_at = ?"
            " WHERE id = ? AND state != 'deleted' RETURNING owner_id, stored_bytes",
            (now, file_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            continue  # no such file, or deleted already: freed once, not twice
        if row[0] is not None:
            await conn.execute(
                "UPDATE accounts SET used_bytes = used_bytes - ? WHERE id = ?",
                (int(row[1]), row[0]),
            )
        async with conn.execute(
            "DELETE FROM chunks WHERE file_id = ? RETURNING cid", (file_id,)
        ) as cur:
            cids.extend([r[0] async for r in cur])
    await pins.unreference(conn, cids)
    return cids


async def owner_of(conn: Connection, file_id: str) -> str | None:
    """The file's uploader (None for a file without an owner), in the caller's transaction."""
    async with conn.execute("SELECT owner_id FROM files WHERE id = ?", (file_id,)) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def add_sale(conn: Connection, file_id: str, chunks: int, earned_msat: int) -> None:
    """Counts a sale of ``chunks`` chunks that earned the owner ``earned_msat``."""
    await conn.execute(
        "UPDATE files SET chunks_sold = chunks_sold + ?, earned_msat = earned_msat + ?"
        " WHERE id = ?",
        (chunks, earned_msat, file_id),
    )
