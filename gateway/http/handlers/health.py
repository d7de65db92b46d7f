"""GET /v1/health: is the gateway, its LND node and kubo answering?"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.http.problems import PROBLEM_TYPE_BASE
from gateway.services import Services, services
from ipfs.errors import IpfsError
from lightning.errors import LightningError

_CHECK_TIMEOUT_S = 3.0


async def _lnd(s: Services) -> dict[str, Any]:
    # The deployment's own node; tenants' own nodes are reported by the operator report.
    try:
        info = await asyncio.wait_for(s.nodes.client(s.config.lnd).get_info(), _CHECK_TIMEOUT_S)
    except (LightningError, TimeoutError) as exc:
        return {"ok": False, "error": str(exc) or "timeout"}
    return {"ok": True, "alias": info.alias, "synced_to_chain": info.synced_to_chain}


async def _kubo(s: Services) -> dict[str, Any]:
    try:
        version = await asyncio.wait_for(s.ipfs.version(), _CHECK_TIMEOUT_S)
    except (IpfsError, TimeoutError) as exc:
        return {"ok": False, "error": str(exc) or "timeout"}
    return {"ok": True, "version": version}


async def health(request: web.Request) -> web.Response:
    s = services(request)
    lnd, kubo = await asyncio.gather(_lnd(s), _kubo(s))
    ok = lnd["ok"] and kubo["ok"]
    body = {
        "status": "ok" if ok else "degraded",
        "gateway": {"ok": True, "version": "0.1.0"},
        "lnd": lnd,
        "kubo": kubo,
    }
    if ok:
        return web.json_response(body)
    body |= {"type": PROBLEM_TYPE_BASE + "dependency-unavailable", "title": "Degraded"}
    return web.json_response(body, status=503, headers={"Retry-After": str(s.config.retry_after_s)})
