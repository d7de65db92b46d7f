"""RFC 9457 problem responses: raise a Problem, the middleware answers with its body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

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


def gone(detail: str) -> Problem:
    return Problem(410, "gone", "Gone", detail)


def conflict(detail: str, slug: str = "conflict", **extra: Any) -> Problem:
    return Problem(409, slug, "Conflict", detail, extra=extra)


def unavailable(what: str, retry_after_s: int) -> Problem:
    return Problem(
        503,
        "dependency-unavailable",
        f"{what} unavailable",
        f"{what} is not answering; the request changed nothing. Try again shortly.",
        headers={"Retry-After": str(retry_after_s)},
    )
