"""`bitcache-admin import` end to end: real SQLite files, the real command in a subprocess,
its reader process, kill -9 and resume. Needs no regtest network."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import GB, TenantSettings
from gateway.identity.import_source import tenant_policies
from gateway.persistence import database, logins
from gateway.persistence.accounts import AccountStore
from gateway.persistence.database import Connection, Database
from gateway.persistence.legacy_import import ImportOptions, run_import
from gateway.persistence.quotas import free_bytes, limit_bytes, subscriptions
from gateway.persistence.sqlite import SqliteDatabase

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = TenantSettings()  # free tier 100 GB; plans 1tb-30d and 5tb-30d
ACME = TenantSettings(id="acme", hostnames=["acme.example"], plans=[])
NOW = int(time.time())
FUTURE = NOW + 90 * 86_400


def _wait(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def _md5(password: str) -> dict[str, str]:
    return {"scheme": "md5", "hash": hashlib.md5(password.encode()).hexdigest()}


def _row(legacy_id: str, username: str, **extra: Any) -> bytes:
    row = {"legacy_id": legacy_id, "username": username, "password": _md5("pw-" + legacy_id)}
    return orjson.dumps(row | extra)


def _config(tmp: Path) -> Path:
    config = tmp / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(tmp / "data"),
                "kubo_api_url": "http://127.0.0.1:5001",
                "lnd": {"rest_url": "https://127.0.0.1:8080", "tls_cert": "-", "macaroon": "-"},
                "tenants": [DEFAULT.model_dump(mode="json"), ACME.model_dump(mode="json")],
            }
        )
    )
    return config


def _db_path(config: Path) -> Path:
    return config.parent / "data" / "gateway.sqlite3"


def _command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.admin", "--config", str(config), "import", *args]


def _import(config: Path, *args: str) -> str:
    done = subprocess.run(
        _command(config, *args), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _query(config: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(_db_path(config)) as conn:
        return conn.execute(sql, params).fetchall()


def _snapshot(
    config: Path, query: Callable[[Path, str], list[tuple[Any, ...]]] | None = None
) -> list[tuple[Any, ...]]:
    """Every row the import writes, in key order; ``query`` reads the database (SQLite's
    file by default)."""
    query = query or _query
    return [
        row
        for table, key in (
            ("legacy_accounts", "tenant_id, username_norm"),
            ("legacy_ids", "legacy_id"),
            ("accounts", "id"),
            ("subscriptions", "id"),
        )
        for row in query(config, f"SELECT * FROM {table} ORDER BY {key}")
    ]


def _rejects(path: Path) -> list[tuple[int, str, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        number, reason, raw = line.split(b"\t", 2)
        out.append((int(number), reason.decode(), raw))
    return out


# Every kind of bad row, with good ones around them; batches of 4 rows so that duplicates
# meet both inside a batch and across batches.
LINES: list[tuple[bytes, str | None]] = [
    (_row("u1", "Alice", email="alice@example.org"), None),
    (b'{"legacy_id": "u9", "username": "broken', "broken JSON"),
    (b"[1, 2]", "not a JSON object"),
    (orjson.dumps({"legacy_id": "u10", "password": _md5("x")}), "missing field: username"),
    (_row("u11", "eve", password={"scheme": "rot13", "hash": "x"}), "unknown password scheme"),
    (_row("u12", "frank", password={"scheme": "bcrypt", "hash": "$2b$10$short"}), "bcrypt hash"),
    (_row("u13", "grace", quota_bytes="lots"), "quota_bytes is not an integer"),
    (_row("u14", "hei\u0000di"), "control or invisible"),
    (_row("u15", "ivan", tenant="nosuch"), "unknown tenant 'nosuch'"),
    (b"   ", None),  # blank: skipped, not a row
    (_row("u2", "ALICE"), "username taken in tenant default by legacy_id u1"),
    (_row("u3", "bob"), None),
    (_row("u4", "Bob"), "username taken in tenant default by legacy_id u3"),
    (_row("u1", "Alice", email="other@example.org"), "legacy_id exists with different data: email"),
    (_row("u3", "bob"), None),  # the same account twice: already there, not a reject
    (_row("u5", "alice", tenant="acme"), None),  # another tenant may have an "alice"
]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "sizes",
    [
        ("--batch-rows", "4"),  # one run, merged at the end
        # Runs of two batches of 2 rows: the duplicates of lines 11, 13, 14 and 15 meet
        # their first rows across runs, and across slices of a run.
        ("--batch-rows", "2", "--run-rows", "4"),
        ("--batch-rows", "1", "--run-rows", "1"),
    ],
)
def test_every_kind_of_bad_row_gets_its_reject_line(tmp_path: Path, sizes: tuple[str, ...]) -> None:
    config = _config(tmp_path)
    data = _write(tmp_path / "legacy.jsonl", [line for line, _ in LINES])
    out = _import(config, str(data), *sizes)

    expected = [(n, reason, line) for n, (line, reason) in enumerate(LINES, 1) if reason]
    # In file order within each step; a run's merge rejects come after its parse rejects.
    got = sorted(_rejects(tmp_path / "legacy.jsonl.rejects"))
    assert [(n, raw) for n, _, raw in got] == [(n, line) for n, _, line in expected]
    for (_, reason, _), (_, expected_reason, _) in zip(got, expected, strict=True):
        assert expected_reason in reason
    assert "15 rows read" in out and "rejected            11" in out, out
    assert "present              1" in out and "added                3" in out, out
    accounts = _query(
        config,
        "SELECT legacy_id, tenant_id, username, email FROM legacy_accounts ORDER BY legacy_id",
    )
    assert accounts == [
        ("u1", "default", "Alice", "alice@example.org"),  # not overwritten by line 14
        ("u3", "default", "bob", None),
        ("u5", "acme", "alice", None),
    ]
    assert os.stat(tmp_path / "legacy.jsonl.rejects").st_mode & 0o077 == 0  # holds hashes


def test_reimport_is_a_no_op(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = _write(tmp_path / "legacy.jsonl", [line for line, _ in LINES])
    rejects = tmp_path / "rejects.tsv"
    _import(config, str(data), "--rejects", str(rejects), "--batch-rows", "4")
    before, rejected = _snapshot(config), rejects.read_bytes()

    # The checkpoint says done: nothing is read.
    assert "imported in full already" in _import(config, str(data), "--rejects", str(rejects))
    copy = shutil.copy(data, tmp_path / "renamed.jsonl")  # same content, another name
    assert "imported in full already" in _import(config, str(copy))
    # Read again from the start: every good row is found present, none added or changed.
    out = _import(config, str(data), "--rejects", str(rejects), "--from-start")
    assert "added                0" in out and "present              4" in out, out
    # A different file (one more blank line) holding the same accounts: the same.
    other = _write(tmp_path / "other.jsonl", [line for line, _ in LINES] + [b""])
    out = _import(config, str(other), "--batch-rows", "3")
    assert "added                0" in out and "present              4" in out, out
    assert _snapshot(config) == before
    assert rejects.read_bytes() == rejected


def test_different_data_for_an_existing_legacy_id_is_reported_not_overwritten(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    first = _write(
        tmp_path / "first.jsonl",
        [_row("u1", "alice", email="a@example.org"), _row("u2", "bob", quota_bytes=5)],
    )
    _import(config, str(first))
    second = _write(
        tmp_path / "second.jsonl",
        [
            _row("u1", "alice", email="changed@example.org", premium_until=FUTURE),
            _row("u2", "bob", quota_bytes=5),
            _row("u3", "carol"),
            _row("u2", "robert", quota_bytes=6, password=_md5("new")),
        ],
    )
    out = _import(config, str(second))
    assert "added                1" in out and "present              1" in out, out
    got = [(n, reason) for n, reason, _ in _rejects(tmp_path / "second.jsonl.rejects")]
    assert got == [
        (1, "legacy_id exists with different data: email, premium_until"),
        (4, "legacy_id exists with different data: username, password, quota_bytes"),
    ]
    assert _query(config, "SELECT email FROM legacy_accounts WHERE legacy_id = 'u1'") == [
        ("a@example.org",)
    ]
    assert _query(config, "SELECT count(*) FROM subscriptions") == [(0,)]


def _big_file(path: Path, rows: int, bad_every: int) -> tuple[int, list[int]]:
    """`rows` lines, every `bad_every`-th one broken; (good rows, bad line numbers)."""
    bad = []
    with path.open("wb") as fh:
        for i in range(1, rows + 1):
            if i % bad_every == 0:
                fh.write(b'{"legacy_id": "broken\n')
                bad.append(i)
            else:
                fh.write(_row(f"u{i}", f"user{(i * 2654435761) % 2**32:08x}.{i}") + b"\n")
    return rows - len(bad), bad


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_mid_import_then_resume_gives_the_exact_count(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = tmp_path / "legacy.jsonl"
    good, bad = _big_file(data, 60_000, bad_every=997)
    # Runs of 7 batches: the kill lands while a run is gathered or merged.
    args = ("--batch-rows", "1000", "--run-rows", "7000")
    proc = subprocess.Popen(
        _command(config, str(data), *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    readers: list[int] = []

    def some_batches_committed() -> bool:
        readers.extend(c for c in _children(proc.pid) if c not in readers)
        if not _db_path(config).exists():
            return False
        try:
            rows = _query(config, "SELECT inserted, finished_at FROM import_checkpoints")
        except sqlite3.OperationalError:  # not migrated yet
            return False
        return bool(rows) and rows[0][0] >= 5_000

    try:
        _wait("5 000 rows committed", some_batches_committed, timeout_s=120)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ((inserted, finished),) = _query(config, "SELECT inserted, finished_at FROM import_checkpoints")
    assert finished is None, "the import ended before it was killed: make the file larger"
    assert 0 < inserted < good
    # The checkpoint and the rows were committed together.
    assert _query(config, "SELECT count(*) FROM legacy_accounts") == [(inserted,)]
    # The reader process ends by itself once the importer is gone.
    assert readers, "the reader process was never seen"
    _wait("the reader to end", lambda: not any(_alive(pid) for pid in readers), timeout_s=30)

    out = _import(config, str(data), *args)
    assert "resumed after line" in out, out
    assert _query(config, "SELECT count(*), count(DISTINCT legacy_id) FROM legacy_accounts") == [
        (good, good)
    ]
    assert _query(config, "SELECT count(*) FROM legacy_ids") == [(good,)]
    # The scratch tables of the runs are gone.
    scratch = "SELECT name FROM sqlite_master WHERE name LIKE 'import~_%' ESCAPE '~'"
    assert _query(config, scratch) == [("import_checkpoints",)]
    assert _query(config, "SELECT inserted, rejected FROM import_checkpoints") == [(good, len(bad))]
    assert [n for n, _, _ in _rejects(tmp_path / "legacy.jsonl.rejects")] == bad


class _Stop(Exception):
    pass


async def test_an_import_stopped_mid_merge_sorts_the_run_again_and_ends_exact(
    tmp_path: Path,
) -> None:
    """A run's sorted copies are scratch (a file of their own): stopped in phase 2 of a
    run's merge, the next run sorts the run's rows again, in the same order, and goes on
    from the recorded position without adding or losing a row."""
    db = await _migrated(tmp_path / "gateway.sqlite3")
    await db.close()
    data = tmp_path / "legacy.jsonl"
    good, bad = _big_file(data, 20_000, bad_every=997)
    opts = ImportOptions(
        path=data,
        db_path=tmp_path / "gateway.sqlite3",
        policies=tenant_policies([DEFAULT]),
        rejects_path=tmp_path / "rejects",
        batch_rows=1000,
        run_rows=7000,
    )
    seen = []

    def stop_in_phase_2(_: Any) -> None:
        with sqlite3.connect(tmp_path / "gateway.sqlite3") as conn:
            merged, run_end, inserted = conn.execute(
                "SELECT merged, run_end, inserted FROM import_checkpoints"
            ).fetchone()
        seen.append(merged)
        if inserted > 0 and merged > 1 and merged > run_end:  # past phase 1: n+1..2n
            raise _Stop

    with pytest.raises(_Stop):
        await asyncio.to_thread(run_import, opts, stop_in_phase_2)
    stopped_at = seen[-1]
    result = await asyncio.to_thread(run_import, opts)
    assert result.resumed_at_line > 0 and stopped_at > 0
    assert (result.counts.inserted, result.counts.rejected) == (good, len(bad))
    assert _query_db(tmp_path / "gateway.sqlite3", "SELECT count(*) FROM legacy_accounts") == [
        (good,)
    ]
    assert _query_db(tmp_path / "gateway.sqlite3", "SELECT count(*) FROM legacy_ids") == [(good,)]
    assert [n for n, _, _ in _rejects(tmp_path / "rejects")] == bad


def _query_db(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def _migrated(db_path: Path) -> Database:
    db = SqliteDatabase(db_path)
    await db.open()
    return db


async def test_premium_time_becomes_a_plan_and_a_larger_quota_the_accounts_own(
    tmp_path: Path,
) -> None:
    db = await _migrated(tmp_path / "gateway.sqlite3")
    try:
        data = _write(
            tmp_path / "legacy.jsonl",
            [
                _row("p1", "premium", premium_until=FUTURE, quota_bytes=500 * GB),
                _row("p2", "lapsed", premium_until=NOW - 86_400, quota_bytes=50 * GB),
                _row("p3", "acme-premium", premium_until=FUTURE, tenant="acme"),
                _row("p4", "plain"),
            ],
        )
        opts = ImportOptions(
            path=data,
            db_path=db.path,
            policies=tenant_policies([DEFAULT, ACME]),
            rejects_path=tmp_path / "rejects",
        )
        result = await asyncio.to_thread(run_import, opts)
        assert (result.counts.inserted, result.counts.plans, result.counts.own_quotas) == (4, 1, 1)
        # Dormant until a login: no account, no subscription yet.
        assert await db.fetch_all("SELECT id FROM accounts") == []
        assert await db.fetch_all("SELECT id FROM subscriptions") == []
        # The first login promotes each (here straight through the persistence call).
        ids = {}
        for r in await db.fetch_all(
            "SELECT legacy_id, tenant_id, username_norm FROM legacy_accounts"
        ):
            async with db.transaction() as conn:
                account_id = await logins.promote(conn, r[1], r[2], b"s", b"p", NOW)
            assert account_id is not None
            ids[r[0]] = account_id
        assert await db.fetch_all("SELECT * FROM legacy_accounts") == []
        assert await db.fetch_all("SELECT * FROM legacy_ids") == []
        [sub] = await subscriptions(db, ids["p1"])
        assert (sub.plan_id, sub.quota_bytes, sub.ends_at) == ("5tb-30d", 5_000 * GB, FUTURE)
        assert sub.starts_at <= int(time.time()) < sub.ends_at
        assert await limit_bytes(db, DEFAULT, ids["p1"], int(time.time())) == 5_000 * GB
        assert await free_bytes(db, DEFAULT, ids["p1"]) == 500 * GB
        # Past premium is no plan; a quota below the tenant's free tier changes nothing.
        assert await subscriptions(db, ids["p2"]) == []
        assert (
            await limit_bytes(db, DEFAULT, ids["p2"], int(time.time())) == DEFAULT.free_quota_bytes
        )
        assert await subscriptions(db, ids["p3"]) == []  # acme sells no plans
        assert (
            await limit_bytes(db, DEFAULT, ids["p4"], int(time.time())) == DEFAULT.free_quota_bytes
        )
        # A promoted account's own key comes from login_keys: its api_key_hash is an 8-byte
        # placeholder, which no key's SHA-256 (32 bytes) can equal.
        lengths = await db.fetch_all("SELECT DISTINCT length(api_key_hash) FROM accounts")
        assert [r[0] for r in lengths] == [8]
        assert await AccountStore(db).by_api_key(ids["p4"][5:]) is None
        # Promoted once: a second promotion (a concurrent login) finds nothing.
        async with db.transaction() as conn:
            assert await logins.promote(conn, "default", "premium", b"s", b"p", NOW) is None
        # The old record stays beside the new login, so a re-import finds it present.
        again = await asyncio.to_thread(run_import, replace(opts, from_start=True))
        assert (again.counts.inserted, again.counts.present) == (0, 4)
    finally:
        await db.close()


def test_premium_plan_can_be_named(tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = _write(tmp_path / "p.jsonl", [_row("p1", "premium", premium_until=FUTURE)])
    _import(config, str(data), "--premium-plan", "1tb-30d")
    plan = "SELECT plan_id, plan_quota_bytes, premium_until FROM legacy_accounts"
    assert _query(config, plan) == [("1tb-30d", 1_000 * GB, FUTURE)]


def test_csv_with_a_header(tmp_path: Path) -> None:
    config = _config(tmp_path)
    digest = hashlib.sha256(b"s" + b"pw").hexdigest()
    data = tmp_path / "legacy.csv"
    data.write_text(
        "legacy_id,username,email,password.scheme,password.hash,password.salt,"
        "password.salt_position,created_at,quota_bytes\n"
        f"c1,Dora,d@example.org,sha256,{digest},s,prefix,2011-06-01T12:00:00Z,\n"
        f"c2,Emil,,sha256,{digest},s,middle,,\n"
        f"c3,dora,,sha256,{digest},,,,7\n"
    )
    out = _import(config, str(data))
    assert "3 rows read" in out and "added                1" in out, out
    got = [(n, reason) for n, reason, _ in _rejects(tmp_path / "legacy.csv.rejects")]
    assert got == [
        (3, "sha256 salt_position is not prefix or suffix"),
        (4, "username taken in tenant default by legacy_id c1"),
    ]
    assert _query(config, "SELECT legacy_id, created_at, legacy_hash FROM legacy_accounts") == [
        ("c1", 1306929600, f'{{"hash":"{digest}","salt":"s","salt_position":"prefix"}}')
    ]


async def test_import_beside_a_running_gateway_on_the_same_database(tmp_path: Path) -> None:
    """The gateway keeps creating accounts through its own connections while an import
    writes: neither fails, and both sets of accounts are there."""
    db = await _migrated(tmp_path / "gateway.sqlite3")
    try:
        good, _ = _big_file(tmp_path / "legacy.jsonl", 20_000, bad_every=10**9)
        opts = ImportOptions(
            path=tmp_path / "legacy.jsonl",
            db_path=db.path,
            policies=tenant_policies([DEFAULT]),
            rejects_path=tmp_path / "rejects",
            batch_rows=500,
        )
        store = AccountStore(db)
        importing = asyncio.create_task(asyncio.to_thread(run_import, opts))
        created = 0
        while not importing.done():
            await store.create("default")
            created += 1
        result = await importing
        assert result.counts.inserted == good
        assert created > 0
        total = await db.fetch_one("SELECT count(*) FROM accounts")
        assert total is not None and total[0] == created
        dormant = await db.fetch_one("SELECT count(*) FROM legacy_accounts")
        assert dormant is not None and dormant[0] == good
    finally:
        await db.close()


def test_unreadable_input_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = _config(tmp_path)
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("id,name\n1,a\n")
    for args in ([str(tmp_path / "missing.jsonl")], [str(bad_csv)]):
        done = subprocess.run(_command(config, *args), cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stderr.startswith("error: "), done.stderr
        assert "Traceback" not in done.stderr
    assert done.stderr == f"error: {bad_csv}: CSV header lacks legacy_id, username, password\n"


@pytest.mark.parametrize("args", [[], ["--config", "/nonexistent.json"]])
def test_import_needs_a_config(tmp_path: Path, args: list[str]) -> None:
    data = _write(tmp_path / "x.jsonl", [_row("u1", "a")])
    done = subprocess.run(
        [sys.executable, "-m", "gateway.admin", *args, "import", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stderr.startswith("error: "), done.stderr


async def test_migration_014_moves_restored_accounts_that_never_logged_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accounts restored by the importer before 014 (an `accounts` row with a placeholder
    key, its plan a subscription) become dormant rows; one that logged in stays."""
    everything = database.migrations()
    monkeypatch.setattr(database, "migrations", lambda: [m for m in everything if m[0] < 13])
    db = await _migrated(tmp_path / "gateway.sqlite3")
    try:
        async with db.transaction() as conn:
            await _old_restored_accounts(conn)
    finally:
        await db.close()
    monkeypatch.setattr(database, "migrations", lambda: everything)
    db = await _migrated(tmp_path / "gateway.sqlite3")
    try:
        dormant = await db.fetch_all(
            "SELECT tenant_id, username_norm, legacy_id, username, legacy_scheme, legacy_hash,"
            " created_at, premium_until, quota_bytes, plan_id, plan_quota_bytes, imported_at"
            " FROM legacy_accounts"
        )
        old = ("default", "dormant", "u1", "Dormant", "md5", '{"hash":"00"}', 1000, FUTURE)
        assert [tuple(r) for r in dormant] == [(*old, 500, "5tb-30d", 7, 2000)]
        ids = await db.fetch_all("SELECT legacy_id, tenant_id, username_norm FROM legacy_ids")
        assert [tuple(r) for r in ids] == [("u1", "default", "dormant")]
        left = await db.fetch_all("SELECT legacy_id FROM accounts")
        assert [tuple(r) for r in left] == [("u2",)]
        subs = await db.fetch_all("SELECT account_id FROM subscriptions")
        assert [tuple(r) for r in subs] == [(f"acct_{(bytes([2]) * 8).hex()}",)]
    finally:
        await db.close()


async def _old_restored_accounts(conn: Connection) -> None:
    """Two accounts as the importer stored them before 014; the second one logged in."""
    for n, (name, logged_in) in enumerate((("Dormant", False), ("Active", True)), 1):
        placeholder = bytes([n]) * 8
        await conn.execute(
            "INSERT INTO accounts (id, tenant_id, api_key_hash, created_at, username,"
            " username_norm, email, free_quota_bytes, login_salt, proof_hash, legacy_id,"
            " legacy_scheme, legacy_hash, legacy_premium_until, legacy_quota_bytes,"
            " imported_at) VALUES (?, 'default', ?, 1000, ?, ?, NULL, 500, ?, ?, ?,"
            " ?, ?, ?, 500, 2000)",
            (
                f"acct_{placeholder.hex()}",
                placeholder,
                name,
                name.lower(),
                b"salt" if logged_in else None,
                b"proof" if logged_in else None,
                f"u{n}",
                None if logged_in else "md5",
                None if logged_in else '{"hash":"00"}',
                FUTURE,
            ),
        )
        await conn.execute(
            "INSERT INTO subscriptions (account_id, plan_id, quota_bytes, starts_at,"
            " ends_at, payment_hash) VALUES (?, '5tb-30d', 7, 2000, ?, ?)",
            (f"acct_{placeholder.hex()}", FUTURE, placeholder),
        )
