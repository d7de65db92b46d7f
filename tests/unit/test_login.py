"""Logins (issue 13): restored accounts of every old password scheme, proof logins, unknown
usernames, new accounts with a username, rate limits. Real SQLite, the real importer, the
real app in-process (a fake Lightning node, never called), the real client login code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import argon2
import bcrypt
import pytest
from aiohttp.test_utils import TestServer

from client import login as client_login
from client.api import BitcacheClient
from client.config import ClientConfig
from client.errors import ClientError
from gateway.app import create_app
from gateway.billing import ledger
from gateway.billing.signup import Signups
from gateway.config import GatewayConfig, LndSettings, TenantSettings
from gateway.identity.import_source import tenant_policies
from gateway.persistence import logins
from gateway.persistence.accounts import insert_account
from gateway.persistence.ledger import balance
from gateway.persistence.legacy_import import ImportOptions, run_import
from gateway.persistence.logins import NewLogin, UsernameTaken, attach
from gateway.persistence.sqlite import SqliteDatabase
from lightning.fake import FakeNetwork, FakeNode

PASSWORD = "correct horse battery staple"
FUTURE = int(time.time()) + 90 * 86_400


def _bcrypt(prefix: str, password: str = PASSWORD, cost: int = 4) -> dict[str, Any]:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    return {"scheme": "bcrypt", "hash": prefix + hashed[4:]}


def _digest(scheme: str, salt: str | None = None, position: str | None = None) -> dict[str, Any]:
    salt_b = (salt or "").encode()
    message = salt_b + PASSWORD.encode() if position == "prefix" else PASSWORD.encode() + salt_b
    record: dict[str, Any] = {"scheme": scheme, "hash": hashlib.new(scheme, message).hexdigest()}
    if salt is not None:
        record |= {"salt": salt, "salt_position": position}
    return record


def _pbkdf2() -> dict[str, Any]:
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, 1_000, 32)
    return {
        "scheme": "pbkdf2-sha256",
        "iterations": 1_000,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(key).decode(),
    }


SCHEMES: dict[str, dict[str, Any]] = {
    "bcrypt-2a": _bcrypt("$2a$"),
    "bcrypt-2b": _bcrypt("$2b$"),
    "bcrypt-2y": _bcrypt("$2y$"),
    "argon2id": {
        "scheme": "argon2id",
        "hash": argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD),
    },
    "pbkdf2-sha256": _pbkdf2(),
    **{
        f"{scheme}-{kind}": _digest(scheme, *args)
        for scheme in ("md5", "sha1", "sha256")
        for kind, args in (
            ("unsalted", ()),
            ("prefix", ("s4lt!", "prefix")),
            ("suffix", ("s4lt!", "suffix")),
        )
    },
}
# Timing: a realistic bcrypt cost, and an md5 record (cheap to check).
TIMED = {"timed-bcrypt": _bcrypt("$2b$", cost=10), "timed-md5": _digest("md5")}


@dataclass
class Gateway:
    url: str
    config: GatewayConfig
    session: aiohttp.ClientSession

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
        async with self.session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json(), resp.headers

    async def salt(self, username: str) -> tuple[bytes, dict[str, Any]]:
        status, body, _ = await self.post("/v1/login/salt", {"username": username})
        assert status == 200, body
        return bytes.fromhex(body["salt"]), body["kdf"]

    async def proof(self, username: str, password: str = PASSWORD) -> str:
        salt, kdf = await self.salt(username)
        return client_login.derive_proof(password, salt, kdf).hex()

    async def usage(self, api_key: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"}
        async with self.session.get(self.url + "/v1/account", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def row(self, username: str) -> tuple[Any, ...]:
        """(legacy_scheme, legacy_hash, login_salt, proof_hash, dormant): a restored account
        that never logged in is a row of legacy_accounts, not of accounts."""
        db = SqliteDatabase(self.config.database_path)
        await db.open()
        try:
            rows = await db.fetch_all(
                "SELECT legacy_scheme, legacy_hash, login_salt, proof_hash, 0 FROM accounts"
                " WHERE username = ?"
                " UNION ALL SELECT legacy_scheme, legacy_hash, NULL, NULL, 1"
                " FROM legacy_accounts WHERE username = ?",
                (username, username),
            )
        finally:
            await db.close()
        assert len(rows) == 1, rows
        return tuple(rows[0])


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"legacy_id": f"id-{name}", "username": f"User-{name}", "password": record}
        for name, record in (SCHEMES | TIMED).items()
    ]
    rows.append(
        {
            "legacy_id": "id-premium",
            "username": "Premium",
            "password": _digest("sha1"),
            "premium_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FUTURE)),
            "quota_bytes": 300 * 10**9,
        }
    )
    return rows


async def _start(tmp_path: Path, **limits: Any) -> tuple[GatewayConfig, Any]:
    config = GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:9",
        lnd=LndSettings(rest_url="https://gw", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"),
        **({"login_user_burst": 1000, "login_client_burst": 1000} | limits),
    )
    db = SqliteDatabase(config.database_path)
    await db.open()  # migrated
    await db.close()
    source = tmp_path / "legacy.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    result = await asyncio.to_thread(
        run_import,
        ImportOptions(
            path=source,
            db_path=config.database_path,
            policies=tenant_policies([TenantSettings()]),
            rejects_path=tmp_path / "rejects.jsonl",
            parse_in_child=False,
        ),
    )
    assert result.counts.inserted == len(_rows()), result
    return config, create_app(config, connect=lambda _settings: FakeNode())


async def _gateway(tmp_path: Path, **limits: Any) -> AsyncIterator[Gateway]:
    config, app = await _start(tmp_path, **limits)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        yield Gateway(str(server.make_url("")).rstrip("/"), config, session)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for g in _gateway(tmp_path):
        yield g


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
async def test_every_old_scheme_logs_in_once_with_its_password_then_by_proof(
    gw: Gateway, scheme: str
) -> None:
    user = f"User-{scheme}"
    proof = await gw.proof(user)
    dormant = await gw.row(user)
    assert dormant[1] is not None and dormant[4] == 1  # the old hash is there, no account yet
    # Before the upgrade a proof alone opens nothing: the gateway has no proof hash yet.
    status, body, _ = await gw.post("/v1/login", {"username": user, "proof": proof})
    assert (status, body["type"].rsplit("/", 1)[-1]) == (401, "login-failed")
    # A wrong password, sent with a proof of the wrong password, is refused.
    wrong = await gw.proof(user, "not the password")
    status, _, _ = await gw.post(
        "/v1/login", {"username": user, "proof": wrong, "password": "not the password"}
    )
    assert status == 401
    assert (await gw.row(user))[1:] == dormant[1:]  # and changes nothing
    # The right password, with the new proof: an API key; the old hash is replaced.
    status, body, _ = await gw.post(
        "/v1/login", {"username": user.upper(), "proof": proof, "password": PASSWORD}
    )
    assert status == 200, body
    assert body["upgraded"] is True
    first_key = body["api_key"]
    # The login promoted it: an account, and no dormant row (row() asserts one row).
    legacy_scheme, legacy_hash, login_salt, proof_hash, is_dormant = await gw.row(user)
    assert legacy_scheme is None and legacy_hash is None and is_dormant == 0
    assert login_salt == bytes.fromhex(proof and (await gw.salt(user))[0].hex())
    assert proof_hash is not None and bytes.fromhex(proof) not in proof_hash
    # From now on: the proof alone, no password.
    status, body, _ = await gw.post("/v1/login", {"username": user, "proof": proof})
    assert status == 200, body
    assert body["upgraded"] is False
    # Both keys work (a login on a second device does not cut off the first).
    for key in (first_key, body["api_key"]):
        assert (await gw.usage(key))["account_id"] == body["account_id"]
    # The password path is closed for good, even with the right password.
    status, _, _ = await gw.post(
        "/v1/login", {"username": user, "proof": proof, "password": PASSWORD}
    )
    assert status == 401
    # And a wrong proof is refused.
    status, _, _ = await gw.post("/v1/login", {"username": user, "proof": wrong})
    assert status == 401


async def test_the_client_logs_in_and_the_next_login_sends_no_password(gw: Gateway) -> None:
    """client.login.login: first login upgrades (password sent once), the next one is proof
    only, which the gateway accepts only because the proof hash is stored."""
    cfg = ClientConfig(gateway_url=gw.url)
    async with BitcacheClient(cfg) as client:
        first = await client_login.login(client, "user-md5-prefix", PASSWORD)
        assert first["upgraded"] is True
        second = await client_login.login(client, "USER-MD5-PREFIX", PASSWORD)
        assert second["upgraded"] is False and second["account_id"] == first["account_id"]
        with pytest.raises(ClientError, match="wrong username or password"):
            await client_login.login(client, "user-md5-prefix", "guess")


async def test_an_unknown_username_answers_like_a_known_one(gw: Gateway) -> None:
    known, kdf_known = await gw.salt("User-bcrypt-2b")
    unknown, kdf_unknown = await gw.salt("nobody-here")
    assert kdf_known == kdf_unknown
    assert len(known) == len(unknown) == 16 and known != unknown
    assert (await gw.salt("NOBODY-here"))[0] == unknown  # stable, normalised
    assert (await gw.salt("nobody-else"))[0] != unknown
    # Refusals are the same problem, word for word.
    refusals = []
    for user in ("User-bcrypt-2b", "nobody-here"):
        for extra in ({}, {"password": "guess"}):
            proof = await gw.proof(user, "guess")
            status, body, _ = await gw.post("/v1/login", {"username": user, "proof": proof} | extra)
            refusals.append((status, body))
    assert all(r == refusals[0] for r in refusals), refusals


async def _refusal_s(gw: Gateway, user: str) -> float:
    started = time.perf_counter()
    status, _, _ = await gw.post(
        "/v1/login", {"username": user, "proof": "00" * 32, "password": "guess"}
    )
    assert status == 401
    return time.perf_counter() - started


async def test_an_unknown_username_takes_as_long_to_refuse_as_a_wrong_password(
    gw: Gateway,
) -> None:
    """Medians of interleaved rounds (the machine is shared, so its load drifts)."""
    users = ("nobody-here", "User-timed-bcrypt", "User-timed-md5")
    times: dict[str, list[float]] = {u: [] for u in users}
    for _ in range(9):
        for user in users:
            times[user].append(await _refusal_s(gw, user))
    unknown, bcrypt_s, md5_s = (statistics.median(times[u]) for u in users)
    # Without the dummy check an unknown name (and an md5 account) is refused in about a
    # millisecond, against tens of milliseconds for bcrypt at cost 10: a ratio near 0.02.
    for known in (bcrypt_s, md5_s):
        assert 0.4 < unknown / known < 2.5, (unknown, bcrypt_s, md5_s)


async def test_login_attempts_are_limited_per_username(tmp_path: Path) -> None:
    async for gw in _gateway(tmp_path, login_user_burst=3, login_user_rate_per_s=0.001):
        proof = "00" * 32
        for _ in range(3):
            status, _, _ = await gw.post(
                "/v1/login", {"username": "User-md5-suffix", "proof": proof}
            )
            assert status == 401
        # The same name in another case is the same name.
        status, body, headers = await gw.post(
            "/v1/login", {"username": "USER-md5-suffix", "proof": proof}
        )
        assert status == 429, body
        assert body["type"].endswith("too-many-logins") and "username" in body["detail"]
        assert int(headers["Retry-After"]) >= 1
        # Even the right credentials wait: the limit is spent before anything is checked.
        right = await gw.proof("User-md5-suffix")
        status, _, _ = await gw.post(
            "/v1/login", {"username": "User-md5-suffix", "proof": right, "password": PASSWORD}
        )
        assert status == 429
        # Another username is not held up.
        status, _, _ = await gw.post("/v1/login", {"username": "User-sha1-suffix", "proof": proof})
        assert status == 401


async def test_login_attempts_are_limited_per_client(tmp_path: Path) -> None:
    async for gw in _gateway(tmp_path, login_client_burst=4, login_client_rate_per_s=0.001):
        proof = "00" * 32
        for i in range(4):
            status, _, _ = await gw.post("/v1/login", {"username": f"name-{i}", "proof": proof})
            assert status == 401
        status, body, headers = await gw.post("/v1/login", {"username": "name-9", "proof": proof})
        assert status == 429 and "client" in body["detail"]
        assert int(headers["Retry-After"]) >= 1


async def test_a_restored_premium_account_sees_its_plan_and_quota(gw: Gateway) -> None:
    proof = await gw.proof("premium")
    status, body, _ = await gw.post(
        "/v1/login", {"username": "premium", "proof": proof, "password": PASSWORD}
    )
    assert status == 200, body
    usage = await gw.usage(body["api_key"])
    assert usage["free_quota_bytes"] == 300 * 10**9
    [plan] = usage["plans"]
    assert plan["active"] and plan["ends_at"] == FUTURE
    assert usage["limit_bytes"] >= plan["quota_bytes"]


async def test_a_new_account_with_a_username_logs_in_by_proof(gw: Gateway) -> None:
    cfg = ClientConfig(gateway_url=gw.url)
    async with BitcacheClient(cfg) as client:
        created = await client_login.create(client, "Zoë", "new secret")
        assert created["username"] == "Zoë"
        logged = await client_login.login(client, "ZOË", "new secret")
        assert logged["account_id"] == created["account_id"] and logged["upgraded"] is False
    # The name is taken, in any case, and by restored accounts too.
    for name in ("zoë", "user-md5-unsalted"):
        salt = os.urandom(16).hex()
        status, body, _ = await gw.post(
            "/v1/accounts", {"username": name, "proof": "11" * 32, "login_salt": salt}
        )
        assert (status, body["type"].rsplit("/", 1)[-1]) == (409, "username-taken"), body
    # All three or none.
    status, body, _ = await gw.post("/v1/accounts", {"username": "half"})
    assert status == 422, body
    # No body at all is still a plain account.
    async with gw.session.post(gw.url + "/v1/accounts") as resp:
        assert resp.status == 201


async def test_a_paid_signup_with_a_taken_username_opens_nothing_and_keeps_the_payment(
    tmp_path: Path,
) -> None:
    """Signups.redeem with a username: a taken one rolls the account (and its booking) back,
    so the same payment can open the account under another name."""
    network = FakeNetwork()
    node, payer = FakeNode(network, "gateway"), FakeNode(network, "payer")
    db = SqliteDatabase(tmp_path / "gateway.sqlite3")
    await db.open()
    try:
        signups = Signups(db, os.urandom(32), 600)
        async with db.transaction() as conn:
            taken, _ = await insert_account(conn, "acme")
            await attach(conn, "acme", taken.id, NewLogin("Carol", "carol", b"s" * 16, b"h" * 32))
        challenge = await signups.challenge("acme", "Acme", 5_000, node, 600)
        payment = await payer.pay_invoice(challenge.bolt11, fee_limit_msat=1_000)
        payment_hash = signups.verify(
            [f"L402 {challenge.macaroon_b64}:{payment.preimage.hex()}"], "acme"
        )
        with pytest.raises(UsernameTaken):
            await signups.redeem(
                payment_hash, "acme", NewLogin("CAROL", "carol", b"t" * 16, b"i" * 32)
            )
        assert len(await db.fetch_all("SELECT id FROM accounts")) == 1
        assert await balance(db, f"{ledger.OPERATOR_SIGNUPS}:acme") == 0
        account, _ = await signups.redeem(
            payment_hash, "acme", NewLogin("Dave", "dave", b"u" * 16, b"j" * 32)
        )
        found = await logins.find(db, "acme", "dave")
        assert found is not None and found.account_id == account.id
        assert (found.login_salt, found.proof_hash) == (b"u" * 16, b"j" * 32)
        assert await balance(db, f"{ledger.OPERATOR_SIGNUPS}:acme") == 5_000
    finally:
        await db.close()
