"""RFC 9457 problem responses, and the middleware that turns every failure into one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from lightning.errors import LightningError, LightningUnavailable
from storage.kubo import KuboError, KuboNotFound, KuboUnavailable

log = logging.getLogger("bitcache.gateway")

PROBLEM_TYPE_BASE = "https://bitcache.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """Raise from a handler to answer with a problem body."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        # Repeated headers (two WWW-Authenticate values), which a dict cannot hold.
        self.extra_headers = list(extra_headers or [])

    def response(self) -> web.Response:
        body = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        resp = web.json_response(
            body, status=self.status, headers=self.headers, content_type=PROBLEM_CONTENT_TYPE
        )
        for name, value in self.extra_headers:
            resp.headers.add(name, value)
        return resp


def bad_request(detail: str, slug: str = "bad-request") -> Problem:
    return Problem(400, slug, "Bad request", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def conflict(detail: str, slug: str = "conflict", **extra: Any) -> Problem:
    return Problem(409, slug, "Conflict", detail, extra=extra)


def gone(detail: str) -> Problem:
    return Problem(410, "gone", "Gone", detail)


def unavailable(what: str, retry_after_s: int) -> Problem:
    return Problem(
        503,
        "dependency-unavailable",
        f"{what} unavailable",
        f"{what} is not answering; the request changed nothing. Try again shortly.",
        headers={"Retry-After": str(retry_after_s)},
    )


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
        except KuboUnavailable as exc:
            log.warning("kubo unavailable: %s", exc)
            return unavailable("Storage node", retry_after_s).response()
        except KuboError as exc:
            # kubo answered but could not serve the data (e.g. a block is missing): the
            # dependency failed, not the request and not the gateway.
            log.error("kubo error on %s %s: %s", request.method, request.path, exc)
            missing = isinstance(exc, KuboNotFound)
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
