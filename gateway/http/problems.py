"""RFC 9457 problem responses: raise a Problem, the middleware answers with its body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

import l402
from gateway.billing.quota import OverQuota

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


UPGRADE_HINT = 'GET /v1/plans, then POST /v1/account/plans {"plan_id": …}'


def payment_required(detail: str, macaroon_b64: str, bolt11: str, **extra: Any) -> Problem:
    """402 with an L402 challenge in both header forms and in the body."""
    return Problem(
        402,
        "payment-required",
        "Payment required",
        detail,
        headers={"Cache-Control": "no-store"},
        extra={**extra, "invoice": bolt11, "macaroon": macaroon_b64},
        extra_headers=[
            ("WWW-Authenticate", value) for value in l402.format_challenge(macaroon_b64, bolt11)
        ],
    )


def over_quota(exc: OverQuota, upgrade: bool = True) -> Problem:
    """507 saying how much is used, asked for and allowed (and how to get more)."""
    extra: dict[str, Any] = {
        "used_bytes": exc.used_bytes,
        "requested_bytes": exc.requested_bytes,
        "limit_bytes": exc.limit_bytes,
    }
    if upgrade:
        extra["upgrade"] = UPGRADE_HINT
    return Problem(507, "over-quota", "Over quota", str(exc), extra=extra)
