"""The vault API: wrapped keys, opaque tree objects, and a long-poll on the change counter.

The gateway holds only ciphertext here (docs/format.md §14); it checks shapes, sizes, the
account's quota and the compare-and-set on the counter, and wakes waiting devices on change.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from gateway.billing.quota import OverQuota
from gateway.http.auth import require_account
from gateway.http.models import (
    MAX_OBJECT_BYTES,
    OBJECT_ID_PATTERN,
    PutKeyBody,
    WriteBody,
)
from gateway.http.params import int_param, json_model
from gateway.http.problems import Problem, bad_request, conflict, not_found, over_quota
from gateway.persistence.accounts import Account
from gateway.persistence.quotas import limit_bytes
from gateway.persistence.vault import CounterMismatch, NotOwnFile, VaultStore
from gateway.services import services, tenant_of
from storage.crypto import b64url_decode_any, b64url_encode
from storage.errors import FormatError
from storage.vault import WrappedKey

PAGE_OBJECTS = 1000
_KEY_NAME = re.compile(r"password|link-[a-z2-7]{13}")
_OBJECT_ID = re.compile(OBJECT_ID_PATTERN)
_FILE_ID = re.compile(r"[a-z2-7]{26}")


class VaultNotifier:
    """Wakes long-polls of one account when its counter moves (this process only)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, account_id: str) -> asyncio.Event:
        return self._events.setdefault(account_id, asyncio.Event())

    def notify(self, account_id: str) -> None:
        event = self._events.pop(account_id, None)
        if event is not None:
            event.set()


NOTIFIER = web.AppKey("vault_notifier", VaultNotifier)
# A long-poll reads the account's counter at least this often (several gateway processes).
_RECHECK_S = 1.0


def _store(request: web.Request) -> VaultStore:
    return VaultStore(services(request).db)


def _b64url(text: str, what: str) -> bytes:
    try:
        return b64url_decode_any(text, what)
    except FormatError as exc:
        raise bad_request(str(exc)) from exc


def _key_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _KEY_NAME.fullmatch(name):
        raise bad_request("a key name is 'password' or 'link-<13 base32 characters>'")
    return name


async def get_vault(request: web.Request) -> web.Response:
    account = await require_account(request)
    store = _store(request)
    return web.json_response(
        {
            "account_id": account.id,
            "counter": await store.counter(account.id),
            "keys": await store.key_names(account.id),
            "keep_versions": tenant_of(request).vault_keep_versions,
            "trash_days": tenant_of(request).vault_trash_days,
        }
    )


async def get_key(request: web.Request) -> web.Response:
    account = await require_account(request)
    name = _key_name(request)
    raw = await _store(request).get_key(account.id, name)
    if raw is None:
        raise not_found(f"no wrapped key named {name}")
    return web.json_response({"name": name, "wrapped": json.loads(raw)})


async def put_key(request: web.Request) -> web.Response:
    account = await require_account(request)
    name = _key_name(request)
    body = await json_model(request, PutKeyBody)
    try:
        wrapped = WrappedKey.from_json_dict(body.wrapped)
    except FormatError as exc:
        raise bad_request(f"not a wrapped key: {exc}", "bad-wrapped-key") from exc
    if wrapped.account != account.id:
        raise bad_request("the wrapped key names another account", "bad-wrapped-key")
    if (wrapped.purpose == "password") != (name == "password"):
        raise bad_request(f"a {wrapped.purpose} wrap cannot be stored as {name}", "bad-wrapped-key")
    stored = await _store(request).put_key(account.id, name, wrapped.to_bytes(), body.create_only)
    if not stored:
        raise conflict(f"the vault already has a {name} key", "vault-key-exists")
    return web.json_response({"name": name}, status=201)


async def delete_key(request: web.Request) -> web.Response:
    account = await require_account(request)
    name = _key_name(request)
    if not await _store(request).delete_key(account.id, name):
        raise not_found(f"no wrapped key named {name}")
    return web.json_response({"name": name, "deleted": True})


async def get_changes(request: web.Request) -> web.Response:
    """Objects changed after ``since``; with ``wait=S`` held open up to S s until there are."""
    account = await require_account(request)
    since = int_param(request.query.get("since", "0"), "since")
    wait = min(
        int_param(request.query.get("wait", "0"), "wait"), services(request).config.long_poll_max_s
    )
    store = _store(request)
    notifier = request.app[NOTIFIER]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        # Take the event before reading, so a write in between still wakes us.
        event = notifier.event(account.id)
        current = await store.counter(account.id)
        remaining = deadline - loop.time()
        if current > since or remaining <= 0:
            break
        try:
            # The notifier hears only this process's writes; another gateway process's
            # write is seen at the next look at the database.
            await asyncio.wait_for(event.wait(), min(remaining, _RECHECK_S))
        except TimeoutError:
            pass
    if current < since:
        raise conflict(
            f"the vault is at change {current}, before {since}: the gateway lost changes "
            "or this device is from another vault",
            "vault-counter-behind",
            counter=current,
        )
    changes = await store.changes(account.id, since, PAGE_OBJECTS)
    return web.json_response(
        {
            "counter": changes.counter,
            "more": changes.more,
            "objects": [
                {
                    "id": o.id,
                    "counter": o.counter,
                    "data": None if o.data is None else b64url_encode(o.data),
                }
                for o in changes.objects
            ],
            "log": None
            if changes.log is None
            else {"counter": changes.log.counter, "data": b64url_encode(changes.log.data)},
        },
        headers={"Cache-Control": "no-store"},
    )


async def write_objects(request: web.Request) -> web.Response:
    """One batch of object writes, accepted only at the counter the writer names."""
    account = await require_account(request)
    body = await json_model(request, WriteBody)
    put = [(w.id, _b64url(w.data, f"object {w.id}")) for w in body.put]
    for oid, data in put:
        if len(data) > MAX_OBJECT_BYTES:
            raise Problem(413, "object-too-large", "Object too large", f"{oid}: over 1 MiB")
    for oid in body.delete:
        if not _OBJECT_ID.fullmatch(oid):
            raise bad_request(f"not an object id: {oid[:40]!r}")
    for fid in body.delete_files:
        if not _FILE_ID.fullmatch(fid):
            raise bad_request(f"not a file id: {fid[:40]!r}")
    log = None if body.log is None else _b64url(body.log, "log")
    if log is not None and len(log) > MAX_OBJECT_BYTES:
        raise Problem(413, "object-too-large", "Object too large", "the log: over 1 MiB")
    if body.delete_files and log is None:
        # Deleting chunk files without recording it would leave other devices' journals
        # naming them (docs/format.md §14.9).
        raise bad_request("delete_files needs the deletion log that records it")
    ids = [oid for oid, _ in put] + body.delete
    if not ids and log is None:
        raise bad_request("an empty batch")
    if len(set(ids)) != len(ids):
        raise bad_request("an object appears twice in one batch")
    counter = await _write(
        request, account, body.if_counter, put, body.delete, log, body.delete_files
    )
    request.app[NOTIFIER].notify(account.id)
    if body.delete_files:
        await services(request).unpinner.drain()  # best effort; the queue is retried later
    return web.json_response({"counter": counter})


async def _write(
    request: web.Request,
    account: Account,
    if_counter: int,
    put: list[tuple[str, bytes]],
    remove: list[str],
    log: bytes | None,
    delete_files: list[str],
) -> int:
    s = services(request)
    limit = await limit_bytes(s.db, tenant_of(request), account.id, int(s.clock()))
    try:
        return await _store(request).write(
            account.id, if_counter, put, remove, limit, log, delete_files
        )
    except NotOwnFile as exc:
        raise Problem(403, "forbidden", "Forbidden", str(exc)) from exc
    except CounterMismatch as exc:
        raise conflict(
            f"the vault moved on to change {exc.current}; read the changes, merge, and retry",
            "vault-counter-moved",
            counter=exc.current,
        ) from exc
    except OverQuota as exc:
        raise over_quota(exc, upgrade=False) from exc
