"""One aiohttp ClientSession per remote service: made on first use, closed once.

The LND and kubo clients both need the same lifecycle: no session until the first call
(so constructing a client never needs a running loop), a new one if the old was closed,
one connection pool with a cap, timeouts, optionally TLS pinned to a service's own
certificate, and ``close()`` that is safe to call twice.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp

__all__ = ["LazySession", "pinned_tls"]


def pinned_tls(cafile: Path) -> ssl.SSLContext:
    """A TLS context that trusts exactly ``cafile`` (a self-signed service certificate).

    Host names are not checked: such certificates (LND's) name localhost and the host's
    own addresses, not always the one dialled; the pinned certificate is what
    authenticates the service. Raises OSError or ssl.SSLError if the file is unusable.
    """
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    return ctx


class LazySession:
    """The ClientSession of one service, created when first needed.

    ``tls`` is called at creation time (not construction), so a certificate written after
    the client was built, as when a node restarts, is read when it is first used.
    """

    def __init__(
        self,
        timeout: aiohttp.ClientTimeout,
        tls: Callable[[], ssl.SSLContext] | None = None,
        limit: int = 64,
    ) -> None:
        self._timeout = timeout
        self._tls = tls
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The open session, made now if there is none (raises what ``tls`` raises)."""
        if self._session is None or self._session.closed:
            ssl_arg: ssl.SSLContext | bool = True if self._tls is None else self._tls()
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=ssl_arg, limit=self._limit),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
