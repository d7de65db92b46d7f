"""A small round-robin HTTP reverse proxy for tests: several gateway processes behind one
URL, as a load balancer in front of gateway replicas would put them.

Each request goes to the next backend in turn; one that refuses the connection (a killed
process) is skipped for that request, which is safe because nothing was sent to it. Bodies
stream both ways (a 16 MiB chunk is never held whole), every end-to-end header passes
unchanged, Host included (tenants are chosen by it), and the proxy appends its peer to
X-Forwarded-For as any proxy does: the gateways behind it count it as one trusted proxy
(`trusted_proxies` + 1). A response cut short by its backend (a process killed mid-chunk)
is cut short to the client too, never completed: the client sees fewer bytes than the
Content-Length and retries.

aiohttp, already a dependency, is the proxy; the HTTP proxies the Python ecosystem
offers (mitmproxy, proxy.py) are far larger than these hundred lines and know nothing of
our round-robin or dead-backend needs.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from regtest.process import free_port

__all__ = ["RoundRobinProxy", "round_robin"]

log = logging.getLogger("bitcache.tests.proxy")

# Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are not forwarded.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_PIECE = 64 * 1024


def _end_to_end(headers: CIMultiDict[str] | object) -> CIMultiDict[str]:
    assert hasattr(headers, "items")
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP)


class RoundRobinProxy:
    """Forwards every request on 127.0.0.1:``port`` to ``backends`` in turn."""

    def __init__(self, backends: Sequence[str], port: int | None = None) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = list(backends)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served: Counter[str] = Counter()  # responses started, per backend
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        # No total timeout: long polls (vault changes) and slow downloads pass through.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,  # bytes pass as the gateway encoded them
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        # A bare server, no router: every path is forwarded as it came, even one a route
        # pattern would not match (a %0A in it, percent-encoded bytes that are not UTF-8).
        server = web.Server(self._forward)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _order(self) -> list[str]:
        """The backends to try for one request: the next in turn first."""
        start = next(self._turn) % len(self.backends)
        return self.backends[start:] + self.backends[:start]

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        headers = _end_to_end(request.headers)
        peer = request.remote or "unknown"
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", []))
        headers.popall("X-Forwarded-For", None)
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        # The body streams through; a refused connection sent none of it, so it can still
        # go to the next backend. A bodiless request may be retried after any failure of
        # the connection (a pooled one to a process that just died).
        body = request.content.iter_chunked(_PIECE) if request.body_exists else None
        for backend in self._order():
            try:
                upstream = await self._session.request(
                    request.method,
                    URL(backend + request.rel_url.raw_path_qs, encoded=True),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            except aiohttp.ClientConnectorError:
                continue  # a dead process: nothing was sent to it
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                if body is None:
                    continue
                break  # part of the body may be gone: the client retries (502)
            async with upstream:
                self.served[backend] += 1
                return await self._relay(request, upstream)
        return web.Response(status=502, text="no backend answered", headers={"Retry-After": "1"})

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(_end_to_end(upstream.headers))
        if "Content-Length" not in upstream.headers and request.method != "HEAD":
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for piece in upstream.content.iter_any():
                await response.write(piece)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError):
            # The backend died mid-body: end the client's connection short as well.
            log.info("backend cut %s %s short", request.method, request.rel_url.path)
            response.force_close()
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


@asynccontextmanager
async def round_robin(backends: Sequence[str]) -> AsyncIterator[RoundRobinProxy]:
    """A started proxy in front of ``backends``, stopped when the block ends."""
    proxy = RoundRobinProxy(backends)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
