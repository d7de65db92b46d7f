"""VaultStore on SQLite and PostgreSQL: compare-and-set, change pages, quota, tombstones."""

from __future__ import annotations

import pytest

from gateway.billing.quota import OverQuota
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database
from gateway.persistence.vault import CounterMismatch, VaultStore

A = "a" * 26
B = "b" * 26
C = "c" * 26


@pytest.fixture
def db(database: Database) -> Database:
    """Each engine in turn (tests/unit/conftest.py)."""
    return database


async def test_compare_and_set_and_changes(db: Database) -> None:
    account, _ = await AccountStore(db).create("default")
    store = VaultStore(db)
    assert await store.counter(account.id) == 0
    assert await store.write(account.id, 0, [(A, b"1" * 10), (B, b"2" * 20)], [], 10**9) == 1
    with pytest.raises(CounterMismatch) as stale:
        await store.write(account.id, 0, [(A, b"x")], [], 10**9)  # another device, stale
    assert stale.value.current == 1
    assert await store.write(account.id, 1, [(C, b"3")], [A], 10**9) == 2
    changes = await store.changes(account.id, 1, 100)
    assert changes.counter == 2 and not changes.more
    assert {(o.id, o.data) for o in changes.objects} == {(A, None), (C, b"3")}
    assert (await AccountStore(db).get(account.id)).used_bytes == 21  # type: ignore[union-attr]


async def test_pages_end_on_whole_batches(db: Database) -> None:
    account, _ = await AccountStore(db).create("default")
    store = VaultStore(db)
    await store.write(account.id, 0, [(A, b"1"), (B, b"2")], [], 10**9)
    await store.write(account.id, 1, [(C, b"3")], [], 10**9)
    first = await store.changes(account.id, 0, 2)
    # A page of 2 would split nothing here, but the batch at counter 2 must wait.
    assert first.more and first.counter == 1 and len(first.objects) == 2
    second = await store.changes(account.id, first.counter, 2)
    assert not second.more and second.counter == 2 and [o.id for o in second.objects] == [C]
    big = await store.changes(account.id, 0, 1)  # one batch bigger than a page: sent whole
    assert big.counter == 1 and len(big.objects) == 2


async def test_quota_counts_object_bytes(db: Database) -> None:
    account, _ = await AccountStore(db).create("default")
    store = VaultStore(db)
    with pytest.raises(OverQuota):
        await store.write(account.id, 0, [(A, b"x" * 101)], [], 100)
    assert await store.counter(account.id) == 0
    await store.write(account.id, 0, [(A, b"x" * 100)], [], 100)
    await store.write(account.id, 1, [(A, b"x" * 10)], [], 100)  # shrinking always fits
    assert (await AccountStore(db).get(account.id)).used_bytes == 10  # type: ignore[union-attr]


async def test_keys_create_only(db: Database) -> None:
    account, _ = await AccountStore(db).create("default")
    store = VaultStore(db)
    assert await store.put_key(account.id, "password", b"{1}", create_only=True)
    assert not await store.put_key(account.id, "password", b"{2}", create_only=True)
    assert await store.get_key(account.id, "password") == b"{1}"
    assert await store.put_key(account.id, "password", b"{3}", create_only=False)
    assert await store.key_names(account.id) == ["password"]
    assert await store.delete_key(account.id, "password")
    assert await store.get_key(account.id, "password") is None
