"""The gateway's middleware: every failure answered as a problem, every request's tenant.

`problem_middleware` turns Problem, unavailable dependencies (Lightning, IPFS, the
database: 503 + Retry-After) and aiohttp's own errors into RFC 9457 bodies, and anything
unexpected into a 500 that tells the client nothing. `tenant_middleware` picks the
tenant from the Host header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import TenantSettings
from gateway.http.problems import Handler, Problem, unavailable
from gateway.persistence.database import DatabaseUnavailable
from ipfs.errors import IpfsError, IpfsNotFound, IpfsUnavailable
from lightning.errors import LightningError, LightningUnavailable

__all__ = ["TENANT", "problem_middleware", "tenant_middleware"]

log = logging.getLogger("bitcache.gateway")


def problem_middleware(retry_after_s: int) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except LightningUnavailable as exc:
            log.warning("LND unavailable: %s", exc)
            return unavailable("Lightning node", retry_after_s).response()
        except LightningError as exc:
            # The node answered but refused: a dependency failure, and what it said (which
            # may name internal URLs) stays in the log.
            log.error("LND error on %s %s: %s", request.method, request.path, exc)
            return Problem(
                502,
                "lightning-error",
                "Lightning node failed",
                "the Lightning node refused the request; nothing was changed",
            ).response()
        except IpfsUnavailable as exc:
            log.warning("IPFS unavailable: %s", exc)
            return unavailable("Storage node", retry_after_s).response()
        except DatabaseUnavailable as exc:
            log.warning("database unavailable: %s", exc)
            return unavailable("Database", retry_after_s).response()
        except IpfsError as exc:
            # The store answered but could not serve the data (e.g. a block is missing): the
            # dependency failed, not the request and not the gateway.
            log.error("IPFS error on %s %s: %s", request.method, request.path, exc)
            missing = isinstance(exc, IpfsNotFound)
            return Problem(
                502,
                "storage-missing" if missing else "storage-error",
                "Storage failed",
                "the storage node does not have this data"
                if missing
                else "the storage node refused the request",
            ).response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return Problem(
                exc.status,
                f"http-{exc.status}",
                exc.reason,
                exc.text or exc.reason,
                headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            ).response()
        except Exception:
            # Full detail to the log, none to the client.
            log.exception("unhandled error on %s %s", request.method, request.path)
            return Problem(
                500, "internal", "Internal error", "The gateway failed; nothing was changed."
            ).response()

    return middleware


TENANT = web.RequestKey("tenant", TenantSettings)


def tenant_middleware(
    resolve: Callable[[str], TenantSettings | None], trust_forwarded_host: bool
) -> Any:
    """Picks the tenant from Host (or X-Forwarded-Host behind a trusted proxy)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Liveness checks and metrics scrapes come from anywhere, by IP as often as not.
        if request.path in ("/v1/health", "/metrics"):
            return await handler(request)
        host = request.headers.get("Host", "")
        if trust_forwarded_host and request.headers.get("X-Forwarded-Host"):
            host = request.headers["X-Forwarded-Host"].split(",")[0]
        tenant = resolve(host) if host else None
        if tenant is None:
            shown = host[:100].encode("ascii", "replace").decode()
            raise Problem(
                421, "unknown-host", "Unknown host", f"no service is configured for host {shown!r}"
            )
        request[TENANT] = tenant
        return await handler(request)

    return middleware
