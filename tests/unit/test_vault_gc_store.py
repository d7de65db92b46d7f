"""Deleting and re-creating files, and the vault's garbage collection, at the store level
on SQLite and PostgreSQL (the `database` fixture of tests/unit/conftest.py): an owner may
create its own deleted file again, nobody else may, used bytes move exactly once each way,
and a collection deletes chunk files only inside the compare-and-set."""

from __future__ import annotations

import pytest

from gateway.persistence import pins
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.files import FileConflict, FileStore, NewChunkFile
from gateway.persistence.vault import CounterMismatch, NotOwnFile, VaultStore
from storage.crypto import (
    MIN_CHUNK_SIZE,
    FileEncryptor,
    FileHeader,
    encode_file_id,
    new_file_id,
    new_file_key,
)

TB = 1 << 40
OBJ = "a" * 26


def header(size: int = MIN_CHUNK_SIZE) -> FileHeader:
    return FileEncryptor(new_file_key(), new_file_id(), size, max(MIN_CHUNK_SIZE, size)).header


async def used(db: Database, account_id: str) -> int:
    row = await db.fetch_one("SELECT used_bytes FROM accounts WHERE id = ?", (account_id,))
    assert row is not None
    return int(row[0])


async def refs(db: Database, cid: str) -> int | None:
    row = await db.fetch_one("SELECT refs FROM pins WHERE cid = ?", (cid,))
    return None if row is None else int(row[0])


async def test_the_owner_re_creates_its_deleted_file_and_nobody_else_can(
    database: Database,
) -> None:
    accounts = AccountStore(database)
    owner, _ = await accounts.create("default")
    other, _ = await accounts.create("default")
    files = FileStore(database)
    h = header()
    record, created = await files.create(h, b"m", 0, owner.id, TB, "default")
    assert created
    size = record.stored_bytes
    await files.put_chunk(record.id, 0, "cid-a", 100)
    assert await files.mark_complete(record.id, 1) == []
    assert await used(database, owner.id) == size

    assert await files.delete(record.id) == ["cid-a"]
    assert await files.delete(record.id) == []  # freed once
    assert await used(database, owner.id) == 0
    assert await refs(database, "cid-a") == 0  # left for the unpinner

    # Another account: refused, live or deleted alike, and charged nothing.
    for account in (other.id,):
        with pytest.raises(FileConflict):
            await files.create(h, b"m", 0, account, TB, "default")
        with pytest.raises(FileConflict):
            await files.record_batch([NewChunkFile(h, b"m", "cid-x", 100)], account, TB, "default")
    # The owner, with another manifest (not the same file) or from another tenant: refused.
    with pytest.raises(FileConflict):
        await files.create(h, b"other", 0, owner.id, TB, "default")
    with pytest.raises(FileConflict):
        await files.create(h, b"m", 0, owner.id, TB, "elsewhere")
    assert await used(database, other.id) == 0
    assert await used(database, owner.id) == 0

    # The owner, the same file: created again, reserved once, its chunk sent again.
    again, created = await files.create(h, b"m", 0, owner.id, TB, "default")
    assert created and again.state == "uploading" and again.id == record.id
    assert await used(database, owner.id) == size
    same, created = await files.create(h, b"m", 0, owner.id, TB, "default")
    assert not created and same.state == "uploading"
    assert await used(database, owner.id) == size  # not twice
    assert await files.missing(record.id, 1) == [0]
    created_chunk, _ = await files.put_chunk(record.id, 0, "cid-a", 100)
    assert created_chunk
    assert await refs(database, "cid-a") == 1  # a stale unpin of cid-a now finds it in use
    async with database.transaction() as conn:
        assert await pins.unreferenced(conn, 10) == []
        assert not await pins.forget_if_unreferenced(conn, "cid-a")  # unpinner must re-pin
    assert await files.mark_complete(record.id, 1) == []
    # Deleted again: freed again.
    await files.delete(record.id)
    assert await used(database, owner.id) == 0


async def test_a_batch_re_creates_the_owners_deleted_chunk_file(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    h = header(3000)
    item = NewChunkFile(h, b"m", "cid-b", 3016)
    out = await files.record_batch([item], owner.id, TB, "default")
    fid = encode_file_id(h.file_id)
    assert out.stored == [fid]
    size = await used(database, owner.id)
    assert size > 0
    await files.delete(fid)
    assert await used(database, owner.id) == 0
    out = await files.record_batch([item], owner.id, TB, "default")
    assert out.stored == [fid] and out.first_references == ["cid-b"]
    assert await used(database, owner.id) == size
    record = await files.get(fid)
    assert record is not None and record.complete
    out = await files.record_batch([item], owner.id, TB, "default")
    assert out.existing == [fid] and await used(database, owner.id) == size


async def test_a_collection_deletes_own_files_only_inside_the_compare_and_set(
    database: Database,
) -> None:
    accounts = AccountStore(database)
    owner, _ = await accounts.create("default")
    other, _ = await accounts.create("default")
    files = FileStore(database)
    store = VaultStore(database)
    mine, _ = await files.create(header(), b"m", 0, owner.id, TB, "default")
    await files.put_chunk(mine.id, 0, "cid-m", 100)
    theirs, _ = await files.create(header(8192), b"m", 0, other.id, TB, "default")
    assert await store.write(owner.id, 0, [(OBJ, b"o" * 40)], [], TB) == 1
    before = await used(database, owner.id)

    # A stale view: refused, nothing deleted.
    with pytest.raises(CounterMismatch):
        await store.write(owner.id, 0, [], [], TB, b"log1", [mine.id])
    # Another account's file: refused, nothing deleted, log untouched.
    with pytest.raises(NotOwnFile):
        await store.write(owner.id, 1, [], [], TB, b"log1", [mine.id, theirs.id])
    assert (await files.get(mine.id)).state == "uploading"  # type: ignore[union-attr]
    assert (await store.changes(owner.id, 0, 10)).log is None

    unknown = "z" * 26
    assert await store.write(owner.id, 1, [], [], TB, b"log-1", [mine.id, unknown]) == 2
    assert (await files.get(mine.id)).deleted  # type: ignore[union-attr]
    assert (await files.get(theirs.id)).state == "uploading"  # type: ignore[union-attr]
    assert await used(database, owner.id) == before - mine.stored_bytes + len(b"log-1")
    assert await refs(database, "cid-m") == 0
    changes = await store.changes(owner.id, 1, 10)
    assert changes.log is not None and (changes.log.counter, changes.log.data) == (2, b"log-1")
    assert (await store.changes(owner.id, 2, 10)).log is None  # not newer than `since`
    # Deleting again (a retried collection) frees nothing twice.
    assert await store.write(owner.id, 2, [], [], TB, b"log-2", [mine.id]) == 3
    assert await used(database, owner.id) == before - mine.stored_bytes + len(b"log-2")
