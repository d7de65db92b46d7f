"""Exactness across processes on PostgreSQL: two Database instances (two connection pools,
as two gateway processes have) on one database, hammered in parallel.

SQLite serialises every writer, so these races cannot happen there; on PostgreSQL the
stores must lock what they read before they write (see gateway/persistence/postgres.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.billing import ledger as rules
from gateway.billing.quota import OverQuota
from gateway.billing.settlement import Settlement
from gateway.billing.withdrawals import WithdrawalRefused, Withdrawals
from gateway.config import GatewayConfig, LndSettings
from gateway.persistence import invoices, quotas
from gateway.persistence.accounts import AccountStore
from gateway.persistence.files import FileStore, stored_size
from gateway.persistence.ledger import balance, book, totals
from gateway.persistence.postgres import PostgresConnection, PostgresDatabase
from gateway.persistence.vault import CounterMismatch, VaultStore
from gateway.tenants.nodes import LightningNodes
from gateway.tenants.registry import TenantRegistry
from lightning.fake import FakeNetwork, FakeNode
from regtest import postgres
from storage.crypto import MIN_CHUNK_SIZE, FileEncryptor, new_file_id, new_file_key

T = TypeVar("T")
PARALLEL = 20


@pytest.fixture
async def pair(postgres_unit_url: str) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two processes' worth of pools on one fresh schema, both opened (and so migrating)
    at the same time."""
    url = await postgres.create_schema(postgres_unit_url)
    a, b = PostgresDatabase(url, pool_size=PARALLEL), PostgresDatabase(url, pool_size=PARALLEL)
    await asyncio.gather(a.open(), b.open())
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


async def spread(
    dbs: tuple[PostgresDatabase, PostgresDatabase],
    call: Callable[[PostgresDatabase, int], Awaitable[T]],
    n: int = PARALLEL,
) -> list[T | BaseException]:
    """Runs call(db, i) n times at once, alternating between the two databases."""
    return await asyncio.gather(*(call(dbs[i % 2], i) for i in range(n)), return_exceptions=True)


def config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
    )


async def test_parallel_creates_reserve_the_quota_exactly(
    pair: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    owner, _ = await AccountStore(pair[0]).create("default")
    headers = [
        FileEncryptor(new_file_key(), new_file_id(), 8 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE).header
        for _ in range(PARALLEL)
    ]
    manifest = os.urandom(100)
    size = stored_size(headers[0], manifest)
    limit = 6 * size + size // 2  # room for six files and a half

    async def create(db: PostgresDatabase, i: int) -> bool:
        _, created = await FileStore(db).create(headers[i], manifest, 0, owner.id, limit, "d")
        return created

    results = await spread(pair, create)
    assert results.count(True) == 6
    assert sum(isinstance(r, OverQuota) for r in results) == PARALLEL - 6, results
    account = await AccountStore(pair[1]).get(owner.id)
    assert account is not None and account.used_bytes == 6 * size


async def test_parallel_withdrawals_hold_the_balance_exactly(
    pair: tuple[PostgresDatabase, PostgresDatabase], tmp_path: Path
) -> None:
    network = FakeNetwork()
    node = FakeNode(network, "gateway", fee_msat=300)
    payer = FakeNode(network, "payer")
    cfg = config(tmp_path)
    services = [
        Withdrawals(db, LightningNodes(cfg.lnd, lambda _s: node), TenantRegistry(cfg), 50, 1_000)
        for db in pair
    ]
    tenant = TenantRegistry(cfg).tenants[0]
    owner, _ = await AccountStore(pair[0]).create(tenant.id)
    amount, reserve = 1_000_000, 5_000  # 50 bps of 1,000 sat
    earned = 3 * (amount + reserve) + 500_000  # three fit, a fourth does not
    async with pair[0].transaction() as conn:
        seed = rules.Transaction(
            "seed",
            "seed",
            (
                rules.Entry(rules.LIGHTNING, -earned),
                rules.Entry(rules.user_account(owner.id), earned),
            ),
        )
        assert await book(conn, seed)
    bills = [await payer.create_invoice(amount, f"w{i}") for i in range(PARALLEL)]

    async def withdraw(db: PostgresDatabase, i: int) -> str:
        result = await services[i % 2].request(owner.id, tenant, bills[i].bolt11, f"key-{i:08}")
        return result.state

    results = await spread(pair, withdraw)
    assert results.count("succeeded") == 3, [str(r) for r in results if not isinstance(r, str)]
    refused = [r for r in results if isinstance(r, WithdrawalRefused)]
    assert len(refused) == PARALLEL - 3 and {r.slug for r in refused} == {"insufficient-funds"}
    paid = [b for b in bills if (await payer.lookup_invoice(b.payment_hash)).state == "settled"]
    assert len(paid) == 3
    user = rules.user_account(owner.id)
    assert await balance(pair[1], user) == earned - 3 * (amount + 300)
    assert await totals(pair[0]) == (0, 0)


async def _seller(db: PostgresDatabase) -> tuple[str, str]:
    """An owner and a file of theirs, priced 1,000 msat a chunk."""
    owner, _ = await AccountStore(db).create("default")
    header = FileEncryptor(new_file_key(), new_file_id(), 4 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE)
    record, _ = await FileStore(db).create(header.header, b"m", 1_000, owner.id, 10**12, "default")
    return owner.id, record.id


async def _invoice(db: PostgresDatabase, file_id: str, payment_hash: bytes) -> None:
    async with db.transaction() as conn:
        await invoices.add_chunk_invoice(
            conn, payment_hash, file_id, 0, 0, 1_000, "lnbcrt", 1, 9**9, "default", "node"
        )


async def test_one_settlement_booked_once_and_many_credited_in_full(
    pair: tuple[PostgresDatabase, PostgresDatabase], tmp_path: Path
) -> None:
    registry = TenantRegistry(config(tmp_path))
    settlements = [Settlement(db, registry) for db in pair]
    owner, file_id = await _seller(pair[0])
    # One invoice seen by both processes' watchers and downloads at once: booked once.
    once = os.urandom(32)
    await _invoice(pair[0], file_id, once)
    booked = await spread(pair, lambda _db, i: settlements[i % 2].book(once, i + 1, ":n"))
    assert booked.count(True) == 1 and booked.count(False) == PARALLEL - 1, booked
    # Many invoices of one owner settling at once (the first credit creates the balance
    # row): every credit counts.
    hashes = [os.urandom(32) for _ in range(PARALLEL)]
    for payment_hash in hashes:
        await _invoice(pair[1], file_id, payment_hash)
    booked = await spread(pair, lambda _db, i: settlements[i % 2].book(hashes[i]))
    assert booked == [True] * PARALLEL
    user = rules.user_account(owner)
    assert await balance(pair[0], user) == (PARALLEL + 1) * 900  # 10 % operator fee
    assert await balance(pair[1], "operator:fees:default") == (PARALLEL + 1) * 100
    assert await totals(pair[0]) == (0, 0)
    assert await invoices.settle_index(pair[1], ":n") == PARALLEL


async def test_plan_purchases_settling_at_once_extend_one_after_the_other(
    pair: tuple[PostgresDatabase, PostgresDatabase], tmp_path: Path
) -> None:
    registry = TenantRegistry(config(tmp_path))
    plan = registry.tenants[0].plans[0]
    settlements = [Settlement(db, registry) for db in pair]
    owner, _ = await AccountStore(pair[0]).create("default")
    hashes = [os.urandom(32) for _ in range(4)]
    async with pair[0].transaction() as conn:
        for payment_hash in hashes:
            await invoices.add_plan_invoice(
                conn, payment_hash, owner.id, plan, "lnbcrt", 1, "default", "node"
            )
    assert await spread(pair, lambda _db, i: settlements[i % 2].book(hashes[i]), 4) == [True] * 4
    subs = await quotas.subscriptions(pair[1], owner.id)
    assert len(subs) == 4
    for before, after in itertools.pairwise(subs):
        assert after.starts_at == before.ends_at  # consecutive, never overlapping
    assert subs[-1].ends_at - subs[0].starts_at == 4 * plan.duration_s


async def test_parallel_puts_of_one_chunk_add_it_once_and_count_one_pin(
    pair: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    _, file_id = await _seller(pair[0])
    added = await spread(pair, lambda db, _i: FileStore(db).put_chunk(file_id, 0, "cid", 10))
    assert added.count((True, True)) == 1 and added.count((False, False)) == PARALLEL - 1, added
    # Chunks of many files sharing one CID, put at once: every reference counted.
    others = [(await _seller(pair[i % 2]))[1] for i in range(PARALLEL)]
    added = await spread(pair, lambda db, i: FileStore(db).put_chunk(others[i], 0, "same", 10))
    assert all(isinstance(a, tuple) and a[0] for a in added), added  # each file's chunk added
    refs = await pair[1].fetch_one("SELECT refs FROM pins WHERE cid = ?", ("same",))
    assert refs is not None and refs[0] == PARALLEL
    firsts = [a for a in added if isinstance(a, tuple) and a[1]]
    assert len(firsts) == 1  # exactly one PUT saw the first reference


async def test_vault_batches_at_one_counter_commit_once(
    pair: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    owner, _ = await AccountStore(pair[0]).create("default")
    object_id = "o" * 26

    async def write(db: PostgresDatabase, i: int) -> int:
        return await VaultStore(db).write(owner.id, 0, [(object_id, bytes([i]) * 10)], [], 10**9)

    results = await spread(pair, write)
    assert results.count(1) == 1, results  # one device wins the compare-and-set
    assert sum(isinstance(r, CounterMismatch) for r in results) == PARALLEL - 1
    assert await VaultStore(pair[1]).counter(owner.id) == 1
    account = await AccountStore(pair[1]).get(owner.id)
    assert account is not None and account.used_bytes == 10


async def test_copy_loads_rows_and_can_skip_existing_keys(
    pair: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    db = pair[0]
    rows = [(f"cid-{i}", i) for i in range(1_000)]
    assert await db.copy_records("pins", ["cid", "refs"], rows) == 1_000
    again = [(f"cid-{i}", 0) for i in range(990, 1_010)]  # ten present, ten new
    async with db.transaction() as conn:  # the importer's way: COPY in its own transaction
        assert isinstance(conn, PostgresConnection)
        added = await conn.copy_records("pins", ["cid", "refs"], again, skip_conflicts=True)
        assert added == 10
        # A second batch in the same transaction (the staging table is made afresh).
        added = await conn.copy_records("pins", ["cid", "refs"], again, skip_conflicts=True)
        assert added == 0
    count = await db.fetch_one("SELECT COUNT(*), MAX(refs) FROM pins")
    assert count is not None and (count[0], count[1]) == (1_010, 999)
    with pytest.raises(ValueError):
        await db.copy_records("pins; DROP TABLE files", ["cid"], [])
