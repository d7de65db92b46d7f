"""GET /v1/health: is the gateway, its database, its LND node and its IPFS store answering?"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from gateway.http.problems import PROBLEM_TYPE_BASE
from gateway.persistence.database import DatabaseUnavailable, ping
from gateway.services import Services, services
from ipfs.errors import IpfsError, IpfsUnavailable
from lightning.errors import LightningError, LightningUnavailable

log = logging.getLogger("bitcache.health")

_CHECK_TIMEOUT_S = 3.0


def _failure(what: str, exc: Exception) -> dict[str, Any]:
    """A failed check as the public sees it: what kind of failure, never the dependency's
    message (it names internal URLs); that goes to the log."""
    log.warning("health: %s check failed: %s", what, exc)
    if isinstance(exc, TimeoutError):
        return {"ok": False, "error": "timeout"}
    if isinstance(exc, LightningUnavailable | IpfsUnavailable | DatabaseUnavailable):
        return {"ok": False, "error": "unreachable"}
    return {"ok": False, "error": "error"}


async def _lnd(s: Services) -> dict[str, Any]:
    # The deployment's own node; tenants' own nodes are reported by the operator report.
    try:
        info = await asyncio.wait_for(s.nodes.client(s.config.lnd).get_info(), _CHECK_TIMEOUT_S)
    except (LightningError, TimeoutError) as exc:
        return _failure("LND", exc)
    return {"ok": True, "alias": info.alias, "synced_to_chain": info.synced_to_chain}


async def _kubo(s: Services) -> dict[str, Any]:
    try:
        version = await asyncio.wait_for(s.ipfs.version(), _CHECK_TIMEOUT_S)
    except (IpfsError, TimeoutError) as exc:
        return _failure("kubo", exc)
    return {"ok": True, "version": version}


async def _database(s: Services) -> dict[str, Any]:
    # SQLite or PostgreSQL: one round trip, so a lost server or a locked file shows here.
    try:
        await asyncio.wait_for(ping(s.db), _CHECK_TIMEOUT_S)
    except (DatabaseUnavailable, TimeoutError) as exc:
        return _failure("database", exc)
    return {"ok": True, "engine": s.db.dialect}


async def _checks(s: Services) -> dict[str, Any]:
    lnd, kubo, database = await asyncio.gather(_lnd(s), _kubo(s), _database(s))
    return {"lnd": lnd, "kubo": kubo, "database": database}


async def health(request: web.Request) -> web.Response:
    s = services(request)
    # Free and unauthenticated: whoever asks, LND and kubo are asked at most once a second.
    checks = await s.health.get("health", lambda: _checks(s))
    lnd, kubo, database = checks["lnd"], checks["kubo"], checks["database"]
    ok = lnd["ok"] and kubo["ok"] and database["ok"]
    body = {
        "status": "ok" if ok else "degraded",
        "gateway": {"ok": True, "version": "0.1.0"},
        "lnd": lnd,
        "kubo": kubo,
        "database": database,
    }
    if ok:
        return web.json_response(body)
    body |= {"type": PROBLEM_TYPE_BASE + "dependency-unavailable", "title": "Degraded"}
    return web.json_response(body, status=503, headers={"Retry-After": str(s.config.retry_after_s)})
