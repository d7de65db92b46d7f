"""Talking to a gateway: one HTTP exchange with retries, and checks on what it answered."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeGuard
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from client.errors import ClientError, GatewayError
from storage.crypto import b64url_decode_any
from storage.errors import FormatError

log = logging.getLogger("bitcache.client")

_JSON_LIMIT = 8 << 20
_PROBLEM_LIMIT = 64 << 10
# 429 and 5xx gateway/proxy answers are transient; a plain 500 is a bug, not worth a retry.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_BACKOFF_S = 10.0
_MAX_RETRY_AFTER_S = 60.0
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def _clean(value: object, limit: int = 300) -> str:
    """Gateway text made safe for a terminal: no control characters, bounded length."""
    text = value if isinstance(value, str) else ""
    return _CONTROL_RE.sub(" ", text)[:limit].strip()


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    # A view of the caller's buffer when a 200 was read ``into`` one (chunks), else bytes.
    body: bytes | memoryview
    truncated: bool

    def json_object(self) -> dict[str, Any]:
        if self.truncated:
            raise GatewayError(self.status, self.reason, "the answer is too large")
        try:
            data = json.loads(bytes(self.body))
        except ValueError:
            raise GatewayError(self.status, self.reason, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(self.status, self.reason, "the answer is not a JSON object")
        return data

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem body, or {} if there is none."""
        try:
            return self.json_object()
        except GatewayError:
            return {}

    def error(self) -> GatewayError:
        problem = self.problem()
        title = _clean(problem.get("title")) or _clean(self.reason) or "Error"
        detail = _clean(problem.get("detail"))
        if not detail:
            detail = _clean(bytes(self.body[:200]).decode("utf-8", "replace")) or "(no detail)"
        return GatewayError(self.status, title, detail)

    def retry_after(self) -> float | None:
        value = self.headers.get("Retry-After", "").strip()
        if not value:
            return None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
        return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether there was more."""
    buf = bytearray()
    async for piece in resp.content.iter_chunked(64 << 10):
        buf += piece
        if len(buf) > limit:
            return bytes(buf[:limit]), True
    return bytes(buf), False


async def _read_into(
    resp: aiohttp.ClientResponse, into: bytearray | memoryview
) -> tuple[memoryview, bool]:
    """The body copied straight into ``into`` (one copy, no growing buffer, no final
    ``bytes``): a view of what arrived, and whether there was more than fits. Taken as
    the pieces the socket delivered (``iter_chunks``): ``iter_chunked(n)`` would first join
    them into n-byte pieces, a second copy of every byte."""
    view = memoryview(into)
    size = 0
    async for piece, _end in resp.content.iter_chunks():
        end = size + len(piece)
        if end > len(view):
            view[size:] = piece[: len(view) - size]
            return view, True
        view[size:end] = piece
        size = end
    return view[:size], False


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    ok: Collection[int],
    allow_402: bool = False,
    data: bytes | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    limit: int = _JSON_LIMIT,
    into: bytearray | memoryview | None = None,
    attempts: int,
    retry_delay_s: float,
) -> _Reply:
    """One HTTP exchange, retried with back-off on 429/502/503/504 and connection errors.

    Every request Bitcache makes is idempotent, so a retry is always safe. With ``into``, a
    200's body is read into that buffer (its size is the limit) and the reply's body is a
    view of it; other answers are read as usual, up to ``limit``.
    """
    delay = retry_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            async with session.request(
                method, url, data=data, json=json_body, headers=headers
            ) as resp:
                body: bytes | memoryview
                if into is not None and resp.status == 200:
                    body, truncated = await _read_into(resp, into)
                else:
                    body, truncated = await _read_limited(resp, limit)
                reply = _Reply(
                    resp.status,
                    resp.reason or "",
                    CIMultiDictProxy(CIMultiDict(resp.headers)),
                    body,
                    truncated,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if attempt >= attempts:
                origin = urlsplit(url).netloc
                raise ClientError(
                    f"cannot reach the gateway at {origin}: {_describe(exc)}"
                ) from None
            wait = delay
        else:
            if reply.status in ok or (allow_402 and reply.status == 402):
                return reply
            if reply.status not in _RETRY_STATUSES or attempt >= attempts:
                raise reply.error()
            after = reply.retry_after()
            wait = delay if after is None else after
        # Headers may hold a paid credential: log the path only.
        log.debug("retrying %s %s in %.1f s", method, urlsplit(url).path, wait)
        await asyncio.sleep(wait)
        delay = min(delay * 2, _MAX_BACKOFF_S)


def _b64url_any(text: object, what: str) -> bytes:
    try:
        return b64url_decode_any(text, what)
    except FormatError:
        raise GatewayError(200, "Bad answer", f"{what} is not base64url") from None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Requester(Protocol):
    """What the engines need to talk to a gateway: :meth:`BitcacheClient._request`."""

    async def _request(
        self,
        method: str,
        url: str,
        *,
        ok: Collection[int],
        allow_402: bool = False,
        data: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        limit: int = _JSON_LIMIT,
        into: bytearray | memoryview | None = None,
        attempts: int | None = None,
    ) -> _Reply: ...
