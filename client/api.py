"""The Bitcache client: encrypt and upload files; download them, paying chunk by chunk (L402).

Downloads keep payment off the critical path: a purchaser buys chunk ranges ahead of the
fetchers (1, 2, 4, … chunks per payment), so after the first small payment the fetchers
rarely wait for money. Both directions resume after an interruption without sending,
fetching or paying twice.

This module is the public facade; the work is done in :mod:`client.http` (requests with
retries), :mod:`client.remote` (what a link points at), :mod:`client.upload` and
:mod:`client.download` (the engines), :mod:`client.files` and :mod:`client.tasks` (helpers).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from client.config import ClientConfig
from client.credit import CreditWallet, default_credit_path
from client.download import DownloadResult, _Download
from client.errors import ClientError, PaymentRefused
from client.files import _choose_target
from client.http import _JSON_LIMIT, _Reply, _request
from client.payer import LndPayer, Payer, format_msat
from client.remote import FileInfo, _open_remote
from client.upload import _upload_file
from lightning.lnd import LndRestClient
from storage.capability import ShareLink
from storage.crypto import DEFAULT_CHUNK_SIZE

__all__ = ["BitcacheClient", "DownloadResult", "FileInfo", "default_cache_dir"]


_READ_BUFSIZE = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bitcache``, else ``~/.cache/bitcache``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "bitcache"


# --- the client -------------------------------------------------------------------------------


class BitcacheClient:
    """Talks to a Bitcache gateway. Use as ``async with BitcacheClient(cfg) as client:``.

    Without a ``payer``, one is built from ``config.lnd`` if set; free files need none.
    """

    def __init__(
        self,
        config: ClientConfig,
        payer: Payer | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        cache_dir: Path | None = None,
        credit_path: Path | None = None,
        retry_attempts: int = 5,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.config = config
        self._lnd: LndRestClient | None = None
        if payer is None and config.lnd is not None:
            lnd = config.lnd
            self._lnd = LndRestClient(lnd.rest_url, lnd.tls_cert, lnd.macaroon)
            payer = LndPayer(self._lnd, config.max_fee_msat)
        self.payer = payer
        self._session = session
        self._owns_session = session is None
        self._cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._attempts = max(1, retry_attempts)
        self._retry_delay_s = retry_delay_s
        # Prepaid credit, when configured (client/credit.py).
        self.credit: CreditWallet | None = None
        if config.credit_msat > 0:
            self.credit = CreditWallet(self, credit_path or default_credit_path())

    async def __aenter__(self) -> BitcacheClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.credit is not None:
            await self.credit.close()  # a top-up in flight must reach the credit file
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._lnd is not None:
            await self._lnd.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No total timeout: a large chunk on a slow link may take long; a stalled
                # socket is caught by sock_read.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=120),
                connector=aiohttp.TCPConnector(limit=max(100, 2 * self.config.concurrency)),
                # A chunk is ~1 MiB: with aiohttp's 64 KiB default the socket's reading is
                # paused and resumed (two epoll_ctl calls) several times per chunk.
                read_bufsize=_READ_BUFSIZE,
            )
            self._owns_session = True
        return self._session

    def lightning_node(self) -> LndRestClient | None:
        """The configured LND node, if any (for account operations that receive money)."""
        return self._lnd

    def _with_account(
        self, url: str, headers: Mapping[str, str] | None
    ) -> Mapping[str, str] | None:
        """Adds the account's Bearer key, but only for our own gateway."""
        key = self.config.api_key
        if key is None or not url.startswith(self.config.gateway_url + "/"):
            return headers
        merged: CIMultiDict[str] = CIMultiDict(headers or {})
        merged.add("Authorization", f"Bearer {key}")
        return merged

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
    ) -> _Reply:
        """One HTTP exchange, retried with back-off on 429/502/503/504 and connection errors.

        Every request Bitcache makes is idempotent, so a retry is always safe, except a
        chunk request that spends credit: it passes ``attempts=1``. ``into``: see
        client.http._request.
        """
        return await _request(
            self._http(),
            method,
            url,
            ok=ok,
            allow_402=allow_402,
            data=data,
            json_body=json_body,
            headers=self._with_account(url, headers),
            limit=limit,
            into=into,
            attempts=self._attempts if attempts is None else attempts,
            retry_delay_s=self._retry_delay_s,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200, 201),
    ) -> dict[str, Any]:
        """A JSON API call to our own gateway (path like "/v1/account"), with retries."""
        reply = await self._request(
            method, self.config.gateway_url + path, ok=ok, json_body=json_body, headers=headers
        )
        return reply.json_object()

    # --- reading ----------------------------------------------------------------------------

    async def info(self, link: ShareLink | str) -> FileInfo:
        """Name, size, type and price of a shared file (free; raises WrongKeyError)."""
        if isinstance(link, str):
            link = ShareLink.parse(link)
        return (await _open_remote(self, link)).info()

    async def download(
        self, link: ShareLink | str, out: Path | None = None, progress: bool = True
    ) -> DownloadResult:
        """Fetch, pay for, decrypt and save a shared file; resumes an interrupted download.

        ``out`` may be a file or a directory; by default the file's own name (never a path)
        in the current directory, which is not overwritten if it already exists.
        """
        if isinstance(link, str):
            link = ShareLink.parse(link)
        out = Path(out) if out is not None else None
        remote = await _open_remote(self, link)
        if remote.state != "complete":
            raise ClientError(
                f"the file is still being uploaded ({remote.chunks_present} of "
                f"{remote.header.chunk_count} chunks present); try again later"
            )
        limit = self.config.max_price_msat_per_chunk
        if remote.price_msat > limit:
            raise PaymentRefused(
                f"the file costs {format_msat(remote.price_msat)} per chunk, above your limit "
                f"of {format_msat(limit)} (max_price_msat_per_chunk)"
            )
        target, from_manifest = _choose_target(out, remote.manifest.name)
        return await _Download(self, remote, target, from_manifest, progress).run()

    # --- writing ----------------------------------------------------------------------------

    async def upload(
        self,
        path: Path,
        price_msat: int | None = None,
        progress: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> ShareLink:
        """Encrypt and upload a file; return its share link (which holds the key).

        Re-running the upload of an unchanged file resumes it: only missing chunks are sent.
        """
        return await _upload_file(self, self._cache_dir, path, price_msat, progress, chunk_size)
