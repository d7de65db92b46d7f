"""KuboClient: the BlockStore of one kubo node, through its RPC API (POST-only, /api/v0).

Not ipfshttpclient: it refuses or warns on every kubo since 0.9. Only ciphertext ever
passes through here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from ipfs.errors import IpfsError, IpfsUnavailable, kubo_error
from ipfs.kubo_socket import CatSocket, open_cat, post, supported
from ipfs.store import BlockStore
from rest.observe import CallObserver, observed
from rest.session import LazySession

__all__ = ["KuboClient"]

_BARE_LIMIT = 64  # LazySession's default pool size


class KuboClient:
    """One kubo node's RPC API. Use as an async context manager, or call close().

    ``observe``, when given, hears of every call (the RPC command, seconds, ok); a ``cat``
    is timed until its last byte."""

    def __init__(
        self, api_url: str, timeout_s: float = 60.0, observe: CallObserver | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._observe = observe
        self._timeout_s = timeout_s
        self._http = LazySession(aiohttp.ClientTimeout(total=timeout_s, sock_connect=5))
        # Bare-socket calls (cat_socket, add) open a connection each, outside the session's
        # pool: as many at once as that pool allows (LazySession's limit), so a burst of
        # downloads neither floods kubo with connections nor runs out of descriptors.
        self._bare = asyncio.Semaphore(_BARE_LIMIT)
        # A stream runs at the pace of whoever reads it (the gateway streams a chunk to its
        # client as it arrives), so only a stalled read times out, never a slow reader.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5, sock_read=timeout_s
        )

    async def __aenter__(self) -> KuboClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def _post_json(
        self, command: str, params: dict[str, str], data: aiohttp.FormData | None = None
    ) -> dict[str, Any]:
        with observed(self._observe, command, (IpfsError,)):
            return await self._post_json_once(command, params, data)

    async def _post_json_once(
        self, command: str, params: dict[str, str], data: aiohttp.FormData | None
    ) -> dict[str, Any]:
        session = self._http.get()
        try:
            async with session.post(
                f"{self.api_url}/api/v0/{command}", params=params, data=data
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise kubo_error(command, resp.status, body)
                # Some commands stream several JSON objects; the last one is the result.
                lines = [ln for ln in body.splitlines() if ln.strip()]
                return dict(json.loads(lines[-1])) if lines else {}
        # A connection cut mid-answer is a payload error, not a connection error: kubo went
        # away all the same (503, not 500).
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise IpfsUnavailable(f"kubo at {self.api_url} unreachable: {exc!r}") from exc

    async def add(self, data: bytes, pin: bool = True) -> str:
        """Stores bytes as a UnixFS file (CIDv1, raw leaves) and returns its CID."""
        params = {"cid-version": "1", "pin": "true" if pin else "false", "quieter": "true"}
        if self.splices:  # plain http: the request in one write (ipfs/kubo_socket.py)
            with observed(self._observe, "add", (IpfsError,)):
                result = await self._add_bare(data, params)
        else:
            form = aiohttp.FormData()
            form.add_field("file", data, filename="chunk", content_type="application/octet-stream")
            result = await self._post_json("add", params, form)
        if "Hash" not in result:
            raise IpfsError(f"kubo add: no CID in the answer: {str(result)[:200]}")
        return str(result["Hash"])

    async def _add_bare(self, data: bytes, params: dict[str, str]) -> dict[str, Any]:
        boundary = secrets.token_hex(16)
        part_head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="chunk"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        async with self._bare:
            status, body = await post(
                self.api_url,
                "add",
                params,
                [part_head, data, f"\r\n--{boundary}--\r\n".encode()],
                f"multipart/form-data; boundary={boundary}",
                timeout_s=self._timeout_s,
            )
        if status != 200:
            raise kubo_error("add", status, body)
        # kubo streams JSON objects, the result last; over HTTP/1.0 a failure after the
        # head shows as an answer without one (no trailer to carry it).
        lines = [ln for ln in body.splitlines() if ln.strip()]
        try:
            return dict(json.loads(lines[-1])) if lines else {}
        except (ValueError, TypeError):
            raise IpfsError(f"kubo add: unexpected answer {body[:200]!r}") from None

    async def cat(self, cid: str) -> bytes:
        return b"".join([part async for part in self.cat_stream(cid)])

    async def cat_stream(
        self, cid: str, block: int = 256 * 1024, *, offset: int = 0, offline: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """The content from byte ``offset`` on. ``offline``: only blocks this node holds
        (a missing one is IpfsNotFound at once, instead of a search of the network)."""
        with observed(self._observe, "cat", (IpfsError,)):
            async for part in self._cat_stream_once(cid, block, offset, offline):
                yield part

    async def _cat_stream_once(
        self, cid: str, block: int, offset: int, offline: bool
    ) -> AsyncIterator[bytes]:
        session = self._http.get()
        params = {"arg": cid} | _flags(offset=offset, offline=offline)
        try:
            async with session.post(
                f"{self.api_url}/api/v0/cat", params=params, timeout=self._stream_timeout
            ) as resp:
                if resp.status != 200:
                    raise kubo_error("cat", resp.status, await resp.read())
                # kubo announces the length, then reports a failure after the headers only
                # in a trailer: a stream that ends short of it is broken, not complete.
                announced = resp.headers.get("X-Content-Length", "")
                received = 0
                async for part in resp.content.iter_chunked(block):
                    received += len(part)
                    yield part
                if announced.isdigit() and received < int(announced):
                    raise IpfsError(f"kubo cat {cid}: stream ended at {received} of {announced}")
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise IpfsUnavailable(f"kubo at {self.api_url} unreachable: {exc!r}") from exc
        except aiohttp.ClientPayloadError as exc:
            # kubo started answering, then failed mid-stream (e.g. a block went missing).
            raise IpfsError(f"kubo cat {cid}: stream broken: {exc!r}") from exc

    @property
    def splices(self) -> bool:
        """Whether :meth:`cat_socket` can serve this node (its API is plain HTTP)."""
        return supported(self.api_url)

    def start_cat(self, cid: str) -> asyncio.Task[CatSocket]:
        """Starts opening :meth:`cat_socket`'s connection now, in the background, so that a
        caller can overlap it with other waiting; pass the task to ``cat_socket(opened=)``
        (or cancel it and close its socket)."""
        return asyncio.ensure_future(self._open_cat(cid))

    async def _open_cat(self, cid: str, offline: bool = False) -> CatSocket:
        """open_cat holding one of the bare connections, given back when it is closed."""
        await self._bare.acquire()  # cancelled here: nothing is held
        try:
            body = await open_cat(
                self.api_url, cid, read_timeout_s=self._timeout_s, offline=offline
            )
        except BaseException:
            self._bare.release()
            raise
        body.on_close = self._bare.release
        return body

    @asynccontextmanager
    async def cat_socket(
        self, cid: str, *, offline: bool = False, opened: Awaitable[CatSocket] | None = None
    ) -> AsyncIterator[CatSocket]:
        """The content as a bare socket that holds exactly it (ipfs/kubo_socket.py), for
        the caller to splice; closed when the block ends. Timed as one ``cat`` until then:
        an IpfsError the block raises (a short body) counts as the call failing.
        ``opened``: the connection :meth:`start_cat` began opening."""
        with observed(self._observe, "cat", (IpfsError,)):
            body = await (opened if opened is not None else self._open_cat(cid, offline))
            try:
                yield body
            finally:
                body.close()

    async def pin_add(self, cid: str) -> None:
        await self._post_json("pin/add", {"arg": cid})

    async def pin_rm(self, cid: str) -> None:
        try:
            await self._post_json("pin/rm", {"arg": cid})
        except IpfsError as exc:
            if "not pinned" not in str(exc):
                raise

    async def stat_size(self, cid: str, *, offline: bool = False) -> int:
        """The file's size in bytes, without fetching it (``offline``: as in cat_stream)."""
        params = {"arg": f"/ipfs/{cid}"} | _flags(offline=offline)
        result = await self._post_json("files/stat", params)
        return int(result["Size"])

    async def version(self) -> str:
        return str((await self._post_json("version", {})).get("Version", ""))


def _flags(offset: int = 0, offline: bool = False) -> dict[str, str]:
    """Query parameters for what differs from kubo's defaults."""
    flags = {"offset": str(offset)} if offset else {}
    return flags | ({"offline": "true"} if offline else {})


# Checked by mypy: kubo is a BlockStore.
_: type[BlockStore] = KuboClient
