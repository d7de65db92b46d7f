"""Logins: the per-account salt, and a username + proof (or, once, the old password) → an
API key. The protocol is in docs/api.md ("Login"); the rules in gateway/identity/login.py.

Nothing here tells a caller whether a username exists: an unknown name gets a salt derived
like a restored account's, and is refused after the same work as a wrong password. A failed
proof, whatever the reason, is one 401 `login-failed`; a client that holds a password then
tries once more with it (the path of a restored account's first login).
"""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web

from gateway.http.models import LoginBody, LoginSaltBody
from gateway.http.params import json_model
from gateway.http.problems import Problem, bad_request
from gateway.identity import legacy_hashes, usernames
from gateway.identity import login as rules
from gateway.persistence import logins
from gateway.services import Services, client_key, services, tenant_of

_FAILED = (
    "wrong username or password. An account restored from the old service sends its "
    "password once, with the new proof, to replace its old password hash"
)


def _normalised(name: str) -> str:
    try:
        usernames.check(name)
    except usernames.InvalidUsername as exc:
        raise bad_request(str(exc), "bad-username") from exc
    return usernames.normalize(name)


async def login_salt(request: web.Request) -> web.Response:
    s = services(request)
    tenant = tenant_of(request)
    body = await json_model(request, LoginSaltBody)
    norm = _normalised(body.username)
    record = await logins.find(s.db, tenant.id, norm)
    salt = record.login_salt if record is not None else None
    if salt is None:
        salt = rules.derived_salt(s.login_salt_key, tenant.id, norm)
    return web.json_response(
        {"salt": salt.hex(), "kdf": rules.KDF, "proof_bytes": rules.PROOF_BYTES},
        headers={"Cache-Control": "no-store"},
    )


def _spend_login_allowance(request: web.Request, s: Services, user_key: str) -> None:
    now = time.monotonic()
    for limiter, key, who in (
        (s.login_client_limiter, client_key(request), "this client"),
        (s.login_user_limiter, user_key, "this username"),
    ):
        wait = limiter.take(key, now)
        if wait > 0:
            raise Problem(
                429,
                "too-many-logins",
                "Too many login attempts",
                f"{who} tried to log in more often than the gateway allows; retry later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


def _legacy(record: logins.LoginRecord | None) -> legacy_hashes.LegacyHash | None:
    """The account's old-service hash, if it still has one. Records were validated at
    import; one that no longer parses (edited by hand) is treated as no record."""
    if record is None or record.legacy_record is None:
        return None
    try:
        return legacy_hashes.parse(record.legacy_record)
    except legacy_hashes.InvalidHash:
        return None


def _failed() -> Problem:
    return Problem(401, "login-failed", "Login failed", _FAILED)


async def login(request: web.Request) -> web.Response:
    s = services(request)
    tenant = tenant_of(request)
    body = await json_model(request, LoginBody)
    norm = _normalised(body.username)
    _spend_login_allowance(request, s, f"{tenant.id}\x00{norm}")
    proof = rules.parse_hex(body.proof, rules.PROOF_BYTES, "proof")
    record = await logins.find(s.db, tenant.id, norm)
    now = int(s.clock())
    if body.password is None:
        if not rules.proof_matches(proof, record.proof_hash if record else None):
            raise _failed()
        assert record is not None
        account_id: str | None = record.account_id
        async with s.db.transaction() as conn:
            api_key = await logins.issue_key(conn, record.account_id, now)
    else:
        parsed = _legacy(record)
        # bcrypt and argon2 release the GIL: the loop keeps serving while one is checked.
        ok = await asyncio.to_thread(rules.check_legacy_password, parsed, body.password)
        if not ok or record is None:
            raise _failed()
        salt = rules.derived_salt(s.login_salt_key, tenant.id, norm)
        # The new proof replaces the old hash (a dormant restored account becomes an
        # account) and the key is issued, in one transaction.
        async with s.db.transaction() as conn:
            account_id = record.account_id
            if not account_id:
                account_id = await logins.promote(
                    conn, tenant.id, norm, salt, rules.proof_hash(proof), now
                )
            elif not await logins.replace_legacy(conn, account_id, salt, rules.proof_hash(proof)):
                account_id = None
            if account_id is None:
                raise _failed()  # a concurrent first login replaced it with its own proof
            api_key = await logins.issue_key(conn, account_id, now)
    return web.json_response(
        {
            "account_id": account_id,
            "api_key": api_key,
            "tenant": tenant.id,
            "upgraded": body.password is not None,
            "note": "Store the API key now: it is shown only once.",
        },
        headers={"Cache-Control": "no-store"},
    )
