"""Every store on both engines: the same calls, the same answers, on SQLite and PostgreSQL
(the `database` fixture of tests/unit/conftest.py runs each test once per engine)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.billing import ledger as rules
from gateway.billing.quota import OverQuota, Plan, Subscription
from gateway.config import TenantSettings
from gateway.persistence import invoices, ledger, pins, quotas, withdrawals
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Database, IntegrityError, migrations, open_database
from gateway.persistence.files import (
    ChunkConflict,
    ChunkRecord,
    FileConflict,
    FileGone,
    FileStore,
    stored_size,
)
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, FileHeader, new_file_id, new_file_key

TB = 10**12
BIG = 5 * 2**40  # well past 2^32: an INTEGER column on PostgreSQL would overflow
BIG_PLAN = Plan(
    id="big", name="Big", quota_bytes=BIG, duration_s=30 * 86_400, price_msat=BIG * 1000
)
PLAN = Plan(id="1tb-30d", name="1 TB", quota_bytes=TB, duration_s=86_400, price_msat=9_000)


def header(plaintext_size: int = 4 * MIN_CHUNK_SIZE) -> FileHeader:
    return FileEncryptor(new_file_key(), new_file_id(), plaintext_size, MIN_CHUNK_SIZE).header


def payment_hash() -> bytes:
    return os.urandom(32)


async def used_bytes(db: Database, account_id: str) -> int:
    account = await AccountStore(db).get(account_id)
    assert account is not None
    return account.used_bytes


async def test_migrations_are_applied_once_and_data_survives_a_reopen(
    database: Database, database_location: str | Path
) -> None:
    latest = migrations()[-1][0]
    assert await database.schema_version() == latest
    account, key = await AccountStore(database).create("default")
    again = open_database(database_location)
    await again.open()  # nothing left to apply: must not fail on existing tables
    try:
        assert await again.schema_version() == latest
        assert await AccountStore(again).by_api_key(key) == account
    finally:
        await again.close()


async def test_rows_read_by_index_and_by_name_alike(database: Database) -> None:
    account, _ = await AccountStore(database).create("brand")
    row = await database.fetch_one(
        "SELECT id, tenant_id, used_bytes FROM accounts WHERE id = ?", (account.id,)
    )
    assert row is not None
    assert (row[0], row["tenant_id"], row["used_bytes"]) == (account.id, "brand", 0)
    assert len(row) == 3
    assert await database.fetch_one("SELECT id FROM accounts WHERE id = ?", ("none",)) is None
    assert await AccountStore(database).ids_in_tenant("brand") == [account.id]


async def test_rowcount_counts_changed_rows(database: Database) -> None:
    store = AccountStore(database)
    for _ in range(3):
        await store.create("counted")
    async with database.transaction() as conn:
        changed = await conn.execute(
            "UPDATE accounts SET used_bytes = used_bytes + 1 WHERE tenant_id = ?", ("counted",)
        )
        assert changed.rowcount == 3
        unchanged = await conn.execute(
            "UPDATE accounts SET used_bytes = 1 WHERE tenant_id = ?", ("nobody",)
        )
        assert unchanged.rowcount == 0


async def test_a_constraint_violation_rolls_the_whole_transaction_back(
    database: Database,
) -> None:
    account, _ = await AccountStore(database).create("default")
    with pytest.raises(IntegrityError):
        async with database.transaction() as conn:
            await conn.execute(
                "UPDATE accounts SET used_bytes = 7 WHERE id = ?", (account.id,)
            )  # kept only if the whole transaction commits
            await conn.execute(  # the CHECK refuses a negative count
                "UPDATE accounts SET used_bytes = -1 WHERE id = ?", (account.id,)
            )
    assert await used_bytes(database, account.id) == 0
    # Code written for SQLite catches the same error on PostgreSQL.
    assert issubclass(IntegrityError, sqlite3.IntegrityError)


async def test_file_create_reserves_quota_once_and_refuses_over_quota(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    first = header()
    manifest = os.urandom(80)
    size = stored_size(first, manifest)
    record, created = await files.create(first, manifest, 2_000, owner.id, 2 * size, "default")
    assert created and record.state == "uploading" and record.manifest == manifest
    assert (record.price_msat, record.stored_bytes) == (2_000, size)
    assert await files.progress(record.id, 4) == (0, [0, 1, 2, 3])
    # The same file again (a retried request): no second reservation.
    again, created = await files.create(first, manifest, 2_000, owner.id, 2 * size, "default")
    assert not created and again == record
    assert await used_bytes(database, owner.id) == size
    with pytest.raises(FileConflict):
        await files.create(first, os.urandom(80), 2_000, owner.id, 2 * size, "default")
    other, _ = await AccountStore(database).create("default")
    with pytest.raises(FileConflict):
        await files.create(first, manifest, 2_000, other.id, 2 * size, "default")
    second = header()
    await files.create(second, manifest, 0, owner.id, 2 * size, "default")
    with pytest.raises(OverQuota):
        await files.create(header(), manifest, 0, owner.id, 2 * size, "default")
    assert await used_bytes(database, owner.id) == 2 * size


async def test_byte_counts_and_amounts_past_32_bits(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    big = header(plaintext_size=BIG)
    record, _ = await files.create(big, b"m", 10**11, owner.id, 10 * TB, "default")
    assert record.stored_bytes > BIG and record.header.plaintext_size == BIG
    assert await used_bytes(database, owner.id) == record.stored_bytes
    await files.add_served({record.id: BIG})
    async with database.transaction() as conn:
        await invoices.add_plan_invoice(
            conn, payment_hash(), owner.id, BIG_PLAN, "lnbcrt1", 1, "default", "node"
        )
        hash_hex = os.urandom(32).hex()
        assert await ledger.book(conn, rules.plan_purchase(hash_hex, BIG * 1000))
    assert await ledger.balance(database, rules.OPERATOR_PLANS) == BIG * 1000
    assert await ledger.totals(database) == (0, 0)
    [usage] = await files.usage(owner.id)
    assert usage.bytes_served == BIG


async def test_chunks_are_immutable_and_completion_needs_them_all(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    record, _ = await files.create(header(), b"m", 0, owner.id, TB, "default")
    assert record.chunk_count == 4
    assert await files.put_chunk(record.id, 0, "cid0", 100) == (True, True)
    assert await files.put_chunk(record.id, 0, "cid0", 100) == (False, False)  # again: fine
    with pytest.raises(ChunkConflict):
        await files.put_chunk(record.id, 0, "other", 100)
    assert await files.get_with_chunk(record.id, 0) == (record, ChunkRecord("cid0", 100))
    assert await files.get_with_chunk(record.id, 1) == (record, None)
    assert await files.get_with_chunk("no-such-file", 0) is None
    assert await files.put_chunk(record.id, 2, "cid0", 100) == (True, False)  # same bytes
    assert await files.missing(record.id, 4) == [1, 3]
    assert await files.mark_complete(record.id, 4) == [1, 3]
    await files.put_chunk(record.id, 1, "cid1", 100)
    await files.put_chunk(record.id, 3, "cid3", 100)
    assert await files.mark_complete(record.id, 4) == []
    done = await files.get(record.id)
    assert done is not None and done.complete
    assert await files.progress(record.id, 4) == (4, [])


async def test_delete_frees_the_bytes_and_unpins_only_what_nothing_uses(
    database: Database,
) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    first, _ = await files.create(header(), b"m", 0, owner.id, TB, "default")
    second, _ = await files.create(header(), b"m", 0, owner.id, TB, "default")
    await files.put_chunk(first.id, 0, "shared", 100)
    await files.put_chunk(first.id, 1, "own", 100)
    await files.put_chunk(second.id, 0, "shared", 100)
    assert sorted(await files.delete(first.id)) == ["own", "shared"]
    assert await files.delete(first.id) == []  # deleted once
    assert await used_bytes(database, owner.id) == second.stored_bytes
    gone = await files.get(first.id)
    assert gone is not None and gone.deleted
    with pytest.raises(FileGone):
        await files.put_chunk(first.id, 2, "late", 100)
    async with database.transaction() as conn:
        # "shared" is still used by the second file; "late" was added but never recorded.
        assert sorted(await pins.unreferenced(conn, 10)) == ["late", "own"]
        assert await pins.unreferenced(conn, 10, among=["own", "shared"]) == ["own"]
        assert len(await pins.unreferenced(conn, 1)) == 1
        assert await pins.forget_if_unreferenced(conn, "own")
        assert await pins.forget_if_unreferenced(conn, "own")  # already gone: done
        assert await pins.reference(conn, "late") == 1  # a PUT took it meanwhile
        assert not await pins.forget_if_unreferenced(conn, "late")
    await files.delete(second.id)
    async with database.transaction() as conn:
        assert await pins.unreferenced(conn, 10) == ["shared"]
    usage = await files.usage(owner.id)
    assert [u.state for u in usage] == ["deleted", "deleted"]
    assert all(u.deleted_at is not None for u in usage)


async def test_a_new_chunk_re_pins_only_if_an_unpin_was_forgotten_since_its_add(
    database: Database,
) -> None:
    owner, _ = await AccountStore(database).create("default")
    files = FileStore(database)
    record, _ = await files.create(header(), b"m", 0, owner.id, TB, "default")
    epoch = await files.pin_epoch()
    # No unpin since the epoch was read: the add's own pin stands, no second pin.
    assert await files.put_chunk(record.id, 0, "a", 100, epoch) == (True, False)
    # The unpinner forgets a CID it unpinned between another PUT's add and its commit.
    async with database.transaction() as conn:
        await pins.release_unrecorded(conn, "b")
        assert await pins.forget_if_unreferenced(conn, "b")
    assert await files.pin_epoch() == epoch + 1
    assert await files.put_chunk(record.id, 1, "b", 100, epoch) == (True, True)
    # Not the first reference: nothing to re-pin whatever the epoch.
    assert await files.put_chunk(record.id, 2, "b", 100, epoch) == (True, False)
    # A forget that finds the CID referenced again does not move the epoch.
    async with database.transaction() as conn:
        assert not await pins.forget_if_unreferenced(conn, "a")
    assert await files.pin_epoch() == epoch + 1


async def test_an_invoice_settles_once_and_the_settle_index_never_moves_back(
    database: Database,
) -> None:
    owner, _ = await AccountStore(database).create("default")
    record, _ = await FileStore(database).create(header(), b"m", 500, owner.id, TB, "brand")
    chunk_hash, plan_hash, stale_hash = payment_hash(), payment_hash(), payment_hash()
    async with database.transaction() as conn:
        await invoices.add_chunk_invoice(
            conn, chunk_hash, record.id, 0, 3, 2_000, "lnbcrt-a", 10, 610, "brand", "node-a"
        )
        await invoices.add_chunk_invoice(
            conn, stale_hash, record.id, 0, 0, 500, "lnbcrt-b", 10, 20, "brand", "node-a"
        )
        await invoices.add_plan_invoice(
            conn, plan_hash, owner.id, PLAN, "lnbcrt-c", 10, "brand", "node-a"
        )
    node_a = invoices.Reporter("node-a", ("brand", "x"))
    assert sorted(await invoices.open_payment_hashes(database, node_a)) == sorted(
        [chunk_hash, plan_hash, stale_hash]
    )
    assert await invoices.open_payment_hashes(database, invoices.Reporter("node-a", ("x",))) == []
    assert await invoices.open_payment_hashes(database, invoices.Reporter("b", ("brand",))) == []
    assert await invoices.tenant_of_invoice(database, chunk_hash) == "brand"
    assert await invoices.tenant_of_invoice(database, payment_hash()) is None
    async with database.transaction() as conn:
        assert await invoices.issuer_of(conn, chunk_hash) == "node-a"
        # Another node's stream cannot vouch for node-a's invoice.
        other = invoices.Reporter("node-b", ("brand",))
        assert await invoices.settle_chunk_invoice(conn, chunk_hash, 100, 7, other) is None
        sale = await invoices.settle_chunk_invoice(conn, chunk_hash, 100, 7, node_a)
        assert sale == invoices.ChunkSale(record.id, 2_000, 4, "brand")
        assert await invoices.settle_chunk_invoice(conn, chunk_hash, 101, 8) is None
        assert await invoices.settle_chunk_invoice(conn, plan_hash, 101, 8) is None
        assert await invoices.issuer_of(conn, chunk_hash) is None  # settled
        plan = await invoices.settle_plan_invoice(conn, plan_hash, 100)
        assert plan == invoices.PlanSale(owner.id, "1tb-30d", 9_000, "brand", TB, 86_400)
        assert await invoices.settle_plan_invoice(conn, plan_hash, 100) is None
        await invoices.record_settle_index(conn, ":node", 9)
        await invoices.record_settle_index(conn, ":node", 12)
        await invoices.record_settle_index(conn, ":node", 10)  # late, lower: ignored
    assert await invoices.settle_index(database, ":node") == 12
    assert await invoices.settle_index(database, ":other") == 0
    async with database.transaction() as conn:
        assert await invoices.expire_stale(conn, 1_000) == 1  # the stale one only
        await invoices.expire(conn, chunk_hash)  # settled: stays settled
    assert await invoices.open_payment_hashes(database, node_a) == []


async def test_ledger_books_each_event_once_and_refuses_overdraw(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    sale = rules.chunk_sale(os.urandom(32).hex(), owner.id, 10_000, 1_000)
    async with database.transaction() as conn:
        assert await ledger.book(conn, sale)
        assert not await ledger.book(conn, sale)  # the same event again
    user = rules.user_account(owner.id)
    assert await ledger.balance(database, user) == 9_000
    assert await ledger.balance(database, rules.OPERATOR_FEES) == 1_000
    with pytest.raises(rules.InsufficientFunds):
        async with database.transaction() as conn:
            await ledger.book(conn, rules.withdrawal_hold("wd_1", owner.id, 9_000, 1))
    assert await ledger.balance(database, user) == 9_000  # nothing half-booked
    async with database.transaction() as conn:
        assert await ledger.book(conn, rules.withdrawal_hold("wd_2", owner.id, 8_000, 1_000))
    assert await ledger.balance(database, user) == 0
    assert await ledger.totals(database) == (0, 0)


async def test_subscriptions_and_the_quota_they_give(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    tenant = TenantSettings(free_quota_bytes=5)
    assert await quotas.limit_bytes(database, tenant, owner.id, 100) == 5
    later = Subscription("1tb-30d", BIG, 200, 300)
    first = Subscription("1tb-30d", BIG, 100, 200)
    async with database.transaction() as conn:
        await quotas.add_subscription(conn, owner.id, later, payment_hash())
        await quotas.add_subscription(conn, owner.id, first, payment_hash())
        assert sorted(
            await quotas.plan_subscriptions(conn, owner.id, "1tb-30d"), key=lambda s: s.starts_at
        ) == [first, later]
        assert await quotas.plan_subscriptions(conn, owner.id, "5tb-30d") == []
    assert await quotas.subscriptions(database, owner.id) == [first, later]
    assert await quotas.limit_bytes(database, tenant, owner.id, 150) == BIG
    assert await quotas.limit_bytes(database, tenant, owner.id, 300) == 5
    with pytest.raises(IntegrityError):  # one subscription per payment
        reused = payment_hash()
        async with database.transaction() as conn:
            await quotas.add_subscription(conn, owner.id, first, reused)
            await quotas.add_subscription(conn, owner.id, later, reused)


async def test_withdrawal_rows_key_once_invoice_once_and_finish_once(database: Database) -> None:
    owner, _ = await AccountStore(database).create("default")
    paid_hash = payment_hash()

    async def insert(withdrawal_id: str, key: str, hash_: bytes) -> None:
        async with database.transaction() as conn:
            await withdrawals.insert(
                conn,
                withdrawal_id,
                owner.id,
                key,
                "lnbcrt",
                hash_,
                BIG,
                25,
                1,
                "default",
                "node",
                "{}",
                2**40,
            )

    await insert("wd_a", "key-a", paid_hash)
    with pytest.raises(IntegrityError):  # the idempotency key again
        await insert("wd_b", "key-a", payment_hash())
    with pytest.raises(IntegrityError):  # the same invoice while the first is pending
        await insert("wd_c", "key-c", paid_hash)
    pending = await withdrawals.get(database, owner.id, "wd_a")
    assert pending is not None and pending.state == "pending" and pending.amount_msat == BIG
    assert await withdrawals.get(database, "someone-else", "wd_a") is None
    assert await withdrawals.by_key(database, owner.id, "key-a") == pending
    assert await withdrawals.pending(database) == [
        withdrawals.Pending("wd_a", paid_hash, "default", "lnbcrt", "node", "{}", 2**40)
    ]
    async with database.transaction() as conn:
        held = await withdrawals.finish(conn, "wd_a", None, "no route", 5)
        assert held == withdrawals.Finished(owner.id, BIG, 25, "default")
        assert await withdrawals.finish(conn, "wd_a", 3, None, 6) is None
    failed = await withdrawals.by_id(database, "wd_a")
    assert failed is not None and (failed.state, failed.failure) == ("failed", "no route")
    await insert("wd_d", "key-d", paid_hash)  # a failed payout frees its invoice
    async with database.transaction() as conn:
        assert await withdrawals.finish(conn, "wd_d", 3, None, 7) is not None
    done = await withdrawals.by_id(database, "wd_d")
    assert done is not None and (done.state, done.fee_paid_msat) == ("succeeded", 3)
    assert await withdrawals.pending(database) == []
