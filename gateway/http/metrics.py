"""/metrics and the middleware that feeds it.

The middleware (outermost, so it sees the status the client got, problems included) times
every request and labels it by its route's pattern (``/v1/files/{file_id}``): never the
raw path, whose ids would make a new series per file. It also reads a few outcomes off
the responses, listed in `_outcome` in one place, so handlers need no metrics code.

``GET /metrics`` is the Prometheus text format (prometheus-client's own aiohttp handler).
It is not part of the /v1 API. Open to anyone with ``metrics_public``; otherwise it needs
the operator token (per-tenant earnings are business data), and without one it is off.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway.http.auth import bearer_token
from gateway.http.chunk_stream import BODY_BYTES_SENT
from gateway.http.middleware import TENANT
from gateway.http.problems import Handler, Problem
from gateway.metrics import Metrics
from gateway.persistence import metrics as reads
from gateway.services import services

__all__ = [
    "CHUNK_ROUTE",
    "METRICS",
    "PATH",
    "PLANS_ROUTE",
    "RUN_ROUTE",
    "metrics_middleware",
    "serve",
]

METRICS = web.AppKey("metrics", Metrics)
PATH = "/metrics"
CHUNK_ROUTE = "/v1/files/{file_id}/chunks/{index}"
RUN_ROUTE = "/v1/files/{file_id}/chunks"  # several chunks in one answer
BATCH_ROUTE = "/v1/files/batch"
# Set by the batch handler: (files stored, files already there, chunk bytes stored).
BATCH_OUTCOME = web.RequestKey("batch_outcome", tuple[int, int, int])
PLANS_ROUTE = "/v1/account/plans"
UNMATCHED = "unmatched"  # any path no route knows: one series, however many paths
_CLIENT_GONE = 499  # the client closed the connection first (nginx's convention)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def metrics_middleware(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.monotonic()
        status = 500
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            await _outcome(metrics, request, response)
            return response
        except web.HTTPException as exc:  # redirects; problems arrive as responses
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = _CLIENT_GONE
            raise
        finally:
            metrics.in_flight.dec()
            metrics.request(route_of(request), request.method, status, time.monotonic() - start)

    return middleware


async def _outcome(metrics: Metrics, request: web.Request, response: web.StreamResponse) -> None:
    """What a response means beyond its status: bytes stored and served, invoices issued.

    A 402 from the chunk route always carries a new invoice (the challenge is made before
    the 402 is raised), and a 201 from the plans route is a plan invoice."""
    route, method, status = route_of(request), request.method, response.status
    tenant = request.get(TENANT)
    tenant_id = tenant.id if tenant is not None else "none"
    if route in (CHUNK_ROUTE, RUN_ROUTE) and method == "GET":
        if status == 200:
            metrics.served(tenant_id, request.get(BODY_BYTES_SENT, _body_size(response)))
        elif status == 402:
            metrics.invoice_created(tenant_id, "chunks")
    elif route == CHUNK_ROUTE and method == "PUT" and status == 201:
        metrics.stored(tenant_id, len(await request.read()))  # already read: cached
    elif route == BATCH_ROUTE and method == "POST" and status == 200:
        metrics.batch(tenant_id, *request.get(BATCH_OUTCOME, (0, 0, 0)))
    elif route == PLANS_ROUTE and method == "POST" and status == 201:
        metrics.invoice_created(tenant_id, "plan")


def _body_size(response: web.StreamResponse) -> int:
    if response.prepared:  # a streamed body has been written by now
        return response.body_length
    return response.content_length or 0


def _allow(request: web.Request) -> None:
    config = services(request).config
    if config.metrics_public:
        return
    expected = config.operator_token
    if expected is None:
        raise Problem(
            404,
            "not-found",
            "Not found",
            "metrics are off: set metrics_public, or operator_token to scrape with it",
        )
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "metrics need the operator token: Authorization: Bearer <operator_token>",
            headers={"WWW-Authenticate": 'Bearer realm="bitcache-metrics"'},
        )


def serve(metrics: Metrics) -> Handler:
    """The /metrics handler: access check, backlog gauges read now, then the text."""
    exposition = make_aiohttp_handler(metrics.registry)

    async def handler(request: web.Request) -> web.StreamResponse:
        _allow(request)
        depth = await reads.backlog(services(request).db)
        metrics.backlog(depth.unpin, depth.withdrawals, depth.invoices)
        return await exposition(request)

    return handler
