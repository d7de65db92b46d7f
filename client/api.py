"""The Bitcache client: encrypt and upload files; download them, paying chunk by chunk (L402).

Downloads keep payment off the critical path: a purchaser buys chunk ranges ahead of the
fetchers (1, 2, 4, … chunks per payment), so after the first small payment the fetchers
rarely wait for money. Both directions resume after an interruption without sending,
fetching or paying twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import heapq
import json
import logging
import mimetypes
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from client.config import ClientConfig, atomic_write_private
from client.errors import ClientError, GatewayError, PaymentRefused
from client.l402_client import ChallengeError, Token, parse_challenge, token_scope
from client.payer import LndPayer, Payer, check_invoice_amount, format_msat
from client.progress import Progress
from lightning.lnd import LndRestClient
from storage.capability import ShareLink
from storage.crypto import (
    CHUNK_OVERHEAD,
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    FileDecryptor,
    FileEncryptor,
    FileHeader,
    b64url_encode,
    decode_file_id,
    decode_key,
    encode_file_id,
    encode_key,
    new_file_id,
    new_file_key,
    plaintext_chunk_size,
    sealed_chunk_size,
)
from storage.errors import FormatError
from storage.manifest import Manifest, open_manifest, seal_manifest

__all__ = ["BitcacheClient", "DownloadResult", "FileInfo", "default_cache_dir"]

log = logging.getLogger("bitcache.client")
_T = TypeVar("_T")

_JSON_LIMIT = 8 << 20
_PROBLEM_LIMIT = 64 << 10
# 429 and 5xx gateway/proxy answers are transient; a plain 500 is a bug, not worth a retry.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_BACKOFF_S = 10.0
_MAX_RETRY_AFTER_S = 60.0
_SAVE_INTERVAL_S = 1.0
# A resumed token this close to its expiry is not worth presenting.
_EXPIRY_MARGIN_S = 5
_STATE_VERSION = 1
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bitcache``, else ``~/.cache/bitcache``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "bitcache"


@dataclass(frozen=True)
class FileInfo:
    """What a share link points at, decrypted: nothing here was paid for."""

    gateway: str
    file_id: str
    name: str
    size: int
    media_type: str
    modified: int | None
    chunk_size: int
    chunk_count: int
    price_msat: int  # per chunk
    state: str  # "uploading" or "complete"

    @property
    def total_price_msat(self) -> int:
        return self.price_msat * self.chunk_count


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    chunks: int
    paid_msat: int  # paid to the gateway during this call, fees excluded
    fees_msat: int  # routing fees during this call, if the payer reports them
    chunks_bought: int


# --- HTTP -------------------------------------------------------------------------------------


def _clean(value: object, limit: int = 300) -> str:
    """Gateway text made safe for a terminal: no control characters, bounded length."""
    text = value if isinstance(value, str) else ""
    return _CONTROL_RE.sub(" ", text)[:limit].strip()


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    truncated: bool

    def json_object(self) -> dict[str, Any]:
        if self.truncated:
            raise GatewayError(self.status, self.reason, "the answer is too large")
        try:
            data = json.loads(self.body)
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
            detail = _clean(self.body[:200].decode("utf-8", "replace")) or "(no detail)"
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


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _settle(work: Coroutine[Any, Any, _T], keep: Callable[[_T], None]) -> _T:
    """Await ``work`` and pass its result to ``keep``, even if we are cancelled meanwhile.

    For what cannot be undone once started (a payment, a chunk already received): on
    cancellation it is waited for and its result kept before the cancellation goes on.
    """
    future = asyncio.ensure_future(work)
    try:
        result = await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        if future.done() and not future.cancelled() and future.exception() is None:
            keep(future.result())
        raise
    keep(result)
    return result


async def _run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run together; on the first failure cancel the others and raise that failure."""
    tasks = [asyncio.create_task(c) for c in coros]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        # Let cancelled tasks finish their cleanup (e.g. wait for a payment in flight).
        await asyncio.gather(*tasks, return_exceptions=True)


class _SharedFd:
    """A file descriptor used from worker threads; closing it waits for their I/O.

    Without the lock a cancelled worker thread could write to a closed descriptor number
    that the process has since reused for another file.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def pwrite_all(self, data: bytes, offset: int) -> None:
        with self._lock:
            if self._fd < 0:
                raise ClientError("the download was abandoned")
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written

    def pread_exact(self, length: int, offset: int) -> bytes:
        with self._lock:
            if self._fd < 0:
                raise ClientError("file closed")
            parts: list[bytes] = []
            while length:
                piece = os.pread(self._fd, length, offset)
                if not piece:
                    raise ClientError("the file got shorter while it was being uploaded")
                parts.append(piece)
                length, offset = length - len(piece), offset + len(piece)
            return b"".join(parts)

    def truncate(self, size: int) -> None:
        with self._lock:
            os.ftruncate(self._fd, size)

    def size(self) -> int:
        with self._lock:
            return os.fstat(self._fd).st_size

    def fsync(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not possible on every platform, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _b64url_any(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text):
        raise GatewayError(200, "Bad answer", f"{what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise GatewayError(200, "Bad answer", f"{what} is not base64url") from None
    return data


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ranges(flags: bytearray) -> list[list[int]]:
    """Indexes set in ``flags`` as inclusive [first, last] runs (small sidecar files)."""
    out: list[list[int]] = []
    for i, flag in enumerate(flags):
        if not flag:
            continue
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _payer_fees(payer: Payer | None) -> int:
    value = getattr(payer, "fees_msat", 0)
    return value if _is_count(value) else 0


# --- the remote file --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Remote:
    link: ShareLink
    file_id: str
    state: str
    header: FileHeader
    manifest: Manifest
    decryptor: FileDecryptor
    price_msat: int
    chunks_present: int

    def chunk_url(self, index: int) -> str:
        return f"{self.link.gateway}/v1/files/{self.file_id}/chunks/{index}"

    def info(self) -> FileInfo:
        m = self.manifest
        return FileInfo(
            gateway=self.link.gateway,
            file_id=self.file_id,
            name=m.name,
            size=m.size,
            media_type=m.media_type,
            modified=m.modified,
            chunk_size=m.chunk_size,
            chunk_count=self.header.chunk_count,
            price_msat=self.price_msat,
            state=self.state,
        )


# --- upload state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    path: Path
    size: int
    mtime_ns: int
    fd: _SharedFd

    @classmethod
    def open(cls, path: Path) -> _Source:
        absolute = path.resolve()
        fd = os.open(absolute, os.O_RDONLY)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ClientError(f"{path} is not a regular file")
        return cls(absolute, st.st_size, st.st_mtime_ns, _SharedFd(fd))

    def changed(self) -> bool:
        st = os.stat(self.path)
        return st.st_size != self.size or st.st_mtime_ns != self.mtime_ns


@dataclass(frozen=True)
class _UploadState:
    """What a resumed upload must reuse: same key and id give byte-identical chunks."""

    gateway: str
    file_id: bytes
    key: bytes = field(repr=False)
    chunk_size: int
    manifest: bytes  # sealed; the gateway accepts a repeat only if it is byte-identical

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": _STATE_VERSION,
                "gateway": self.gateway,
                "file_id": encode_file_id(self.file_id),
                "key": encode_key(self.key),
                "chunk_size": self.chunk_size,
                "manifest": b64url_encode(self.manifest),
            }
        ).encode()

    @classmethod
    def load(cls, path: Path) -> _UploadState | None:
        try:
            data = json.loads(path.read_bytes())
            if data.get("version") != _STATE_VERSION:
                return None
            return cls(
                gateway=str(data["gateway"]),
                file_id=decode_file_id(data["file_id"]),
                key=decode_key(data["key"]),
                chunk_size=int(data["chunk_size"]),
                manifest=_b64url_any(data["manifest"], "manifest"),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ClientError):
            return None  # no usable state: start a fresh upload


def _read_and_seal(enc: FileEncryptor, source: _Source, index: int) -> bytes:
    h = enc.header
    length = plaintext_chunk_size(index, h.plaintext_size, h.chunk_size)
    return enc.seal(index, source.fd.pread_exact(length, index * h.chunk_size))


def _indexes(value: object, count: int) -> list[int]:
    """A gateway's list of chunk indexes, checked."""
    if not isinstance(value, list):
        raise GatewayError(200, "Bad answer", "the list of missing chunks is malformed")
    out: set[int] = set()
    for item in value:
        if not _is_count(item) or item >= count:
            raise GatewayError(200, "Bad answer", "the list of missing chunks is malformed")
        out.add(item)
    return sorted(out)


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

    async def __aenter__(self) -> BitcacheClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
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
    ) -> _Reply:
        """One HTTP exchange, retried with back-off on 429/502/503/504 and connection errors.

        Every request Bitcache makes is idempotent, so a retry is always safe.
        """
        session = self._http()
        headers = self._with_account(url, headers)
        delay = self._retry_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                async with session.request(
                    method, url, data=data, json=json_body, headers=headers
                ) as resp:
                    body, truncated = await _read_limited(resp, limit)
                    reply = _Reply(
                        resp.status,
                        resp.reason or "",
                        CIMultiDictProxy(CIMultiDict(resp.headers)),
                        body,
                        truncated,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self._attempts:
                    origin = urlsplit(url).netloc
                    raise ClientError(
                        f"cannot reach the gateway at {origin}: {_describe(exc)}"
                    ) from None
                wait = delay
            else:
                if reply.status in ok or (allow_402 and reply.status == 402):
                    return reply
                if reply.status not in _RETRY_STATUSES or attempt >= self._attempts:
                    raise reply.error()
                after = reply.retry_after()
                wait = delay if after is None else after
            # Headers may hold a paid credential: log the path only.
            log.debug("retrying %s %s in %.1f s", method, urlsplit(url).path, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, _MAX_BACKOFF_S)

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

    async def _open_remote(self, link: ShareLink) -> _Remote:
        file_id = encode_file_id(link.file_id)
        reply = await self._request("GET", f"{link.gateway}/v1/files/{file_id}", ok=(200,))
        state = reply.json_object()
        raw_header = state.get("header")
        try:
            if not isinstance(raw_header, dict):
                raise FormatError("missing")
            header = FileHeader.from_json_dict(raw_header)
        except FormatError as exc:
            raise GatewayError(200, "Bad answer", f"the file header is invalid: {exc}") from None
        if header.file_id != link.file_id:
            raise GatewayError(200, "Bad answer", "the gateway described a different file")
        # Checks the key commitment: a wrong key stops here, before anything is paid.
        decryptor = FileDecryptor(link.key, header)
        sealed = _b64url_any(state.get("manifest"), "manifest")
        manifest = open_manifest(decryptor.keys, header.file_id, sealed)
        if manifest.size != header.plaintext_size or manifest.chunk_size != header.chunk_size:
            raise GatewayError(
                200, "Bad answer", "the file header's sizes do not match the encrypted manifest"
            )
        price, present = state.get("price_msat"), state.get("chunks_present", 0)
        if state.get("owned") is True:
            price = 0  # the gateway serves its owner's files without payment
        if not _is_count(price) or not _is_count(present):
            raise GatewayError(200, "Bad answer", "price_msat or chunks_present is malformed")
        return _Remote(
            link=link,
            file_id=file_id,
            state=_clean(state.get("state"), 20) or "unknown",
            header=header,
            manifest=manifest,
            decryptor=decryptor,
            price_msat=price,
            chunks_present=present,
        )

    async def info(self, link: ShareLink | str) -> FileInfo:
        """Name, size, type and price of a shared file (free; raises WrongKeyError)."""
        if isinstance(link, str):
            link = ShareLink.parse(link)
        return (await self._open_remote(link)).info()

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
        remote = await self._open_remote(link)
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
        path = Path(path)
        if price_msat is not None and price_msat < 0:
            raise ClientError("the price must not be negative")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ClientError(f"chunk size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
        source = await asyncio.to_thread(_Source.open, path)
        try:
            return await self._upload(source, path.name, price_msat, progress, chunk_size)
        finally:
            source.fd.close()

    def _upload_state_path(self, source: _Source) -> Path:
        ident = f"{source.path}\0{source.size}\0{source.mtime_ns}"
        digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()
        return self._cache_dir / "uploads" / f"{digest}.json"

    def _new_upload(self, source: _Source, name: str, chunk_size: int) -> _UploadState:
        key, file_id = new_file_key(), new_file_id()
        enc = FileEncryptor(key, file_id, source.size, chunk_size)
        try:
            manifest = Manifest(
                name=name,
                size=source.size,
                media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                chunk_size=chunk_size,
                modified=source.mtime_ns // 1_000_000_000,
            )
        except ValidationError as exc:
            problem = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ClientError(f"cannot upload a file named {name!r}: {problem}") from None
        sealed = seal_manifest(enc.keys, file_id, manifest)
        return _UploadState(self.config.gateway_url, file_id, key, chunk_size, sealed)

    async def _upload(
        self,
        source: _Source,
        name: str,
        price_msat: int | None,
        show: bool,
        chunk_size: int,
    ) -> ShareLink:
        base = self.config.gateway_url
        state_path = self._upload_state_path(source)
        state = await asyncio.to_thread(_UploadState.load, state_path)
        if state is not None and (state.gateway != base or state.chunk_size != chunk_size):
            state = None
        while True:
            resumed = state is not None
            if state is None:
                state = self._new_upload(source, name, chunk_size)
                # Saved before the gateway hears of the file, so any interruption can resume.
                await asyncio.to_thread(atomic_write_private, state_path, state.to_bytes())
            enc = FileEncryptor(state.key, state.file_id, source.size, state.chunk_size)
            body: dict[str, Any] = {
                "header": enc.header.to_json_dict(),
                "manifest": b64url_encode(state.manifest),
            }
            if price_msat is not None:
                body["price_msat"] = price_msat
            reply = await self._request(
                "POST",
                f"{base}/v1/files",
                json_body=body,
                ok=(200, 201, 409) if resumed else (200, 201),
            )
            if reply.status != 409:
                break
            # The saved state no longer matches what the gateway holds: start afresh.
            log.info("the gateway rejects the saved upload state; starting a new upload")
            state = None

        file_state = reply.json_object()
        count = enc.chunk_count
        file_id = encode_file_id(state.file_id)
        complete = file_state.get("state") == "complete"
        if complete:
            todo: list[int] = []
        elif reply.status == 201:
            todo = list(range(count))
        else:
            todo = _indexes(file_state.get("missing"), count)
        present = file_state.get("chunks_present", 0)
        present = min(present, count) if _is_count(present) and not complete else count
        meter = Progress(
            source.size,
            label=name,
            initial=min(source.size, present * state.chunk_size),
            quiet=not show,
        )
        ok = False
        try:
            sent: set[int] = set()
            while not complete:
                await self._put_chunks(enc, source, file_id, todo, meter)
                sent.update(todo)
                if await asyncio.to_thread(source.changed):
                    raise ClientError(f"{name} changed while it was being uploaded; upload again")
                done = await self._request(
                    "POST", f"{base}/v1/files/{file_id}/complete", ok=(200, 409)
                )
                if done.status == 200:
                    break
                # The state lists at most 1000 missing chunks; the rest show up here.
                missing = _indexes(done.problem().get("missing"), count)
                if not missing or sent.intersection(missing):
                    raise done.error()
                todo = missing
            ok = True
        finally:
            meter.close(ok)
        await asyncio.to_thread(state_path.unlink, True)
        return ShareLink(gateway=base, file_id=state.file_id, key=state.key)

    async def _put_chunks(
        self,
        enc: FileEncryptor,
        source: _Source,
        file_id: str,
        todo: list[int],
        meter: Progress,
    ) -> None:
        url = f"{self.config.gateway_url}/v1/files/{file_id}/chunks/"
        order = iter(todo)

        async def worker() -> None:
            # Each worker holds one chunk at a time, so memory stays ~concurrency chunks.
            for index in order:
                sealed = await asyncio.to_thread(_read_and_seal, enc, source, index)
                await self._request(
                    "PUT",
                    f"{url}{index}",
                    data=sealed,
                    headers={"Content-Type": "application/octet-stream"},
                    ok=(200, 201),
                )
                meter.update(len(sealed) - CHUNK_OVERHEAD)

        await _run_all([worker() for _ in range(min(self.config.concurrency, len(todo)))])


def _choose_target(out: Path | None, name: str) -> tuple[Path, bool]:
    """Where to save, and whether the name came from the (untrusted) manifest."""
    # The manifest is written by whoever shared the link: use a bare name, never a path.
    safe = Path(name.replace("\\", "/")).name
    if safe in ("", ".", ".."):
        safe = "download"
    if out is None:
        target = Path.cwd() / safe
    elif out.is_dir():
        target = out / safe
    else:
        return out, False
    # Never silently replace a file picked by someone else's manifest (think ".bashrc").
    if target.exists():
        raise ClientError(f"{target} already exists; choose where to save it with -o")
    return target, True


# --- download engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Offer:
    """A checked L402 challenge: what paying ``invoice`` buys."""

    macaroon: str = field(repr=False)
    invoice: str
    first: int
    count: int
    valid_until: int | None
    amount_msat: int


class _Download:
    """One download: a purchaser buying ranges ahead, fetchers taking chunks in order."""

    def __init__(
        self,
        client: BitcacheClient,
        remote: _Remote,
        target: Path,
        from_manifest: bool,
        show: bool,
    ) -> None:
        self._c = client
        self._r = remote
        self._target = target
        self._from_manifest = from_manifest
        self._show = show
        self._part = target.with_name(target.name + ".part")
        self._sidecar = target.with_name(target.name + ".part.json")
        h = remote.header
        self._n = h.chunk_count
        self._paid = remote.price_msat > 0
        self._done = bytearray(self._n)
        self._remaining = self._n
        self._tokens: list[Token] = []
        # Needed chunks with no token and no purchase under way; a heap gives the lowest.
        self._uncovered: set[int] = set()
        self._heap: list[int] = []
        self._buying: list[tuple[int, int]] = []  # ranges being paid for right now
        self._starved = 0  # fetchers waiting for a token
        self._next_range = 1
        self._paid_msat = 0
        self._chunks_bought = 0
        self._budget_chunks = 0
        self._cond = asyncio.Condition()
        self._fd: _SharedFd | None = None
        self._meter: Progress | None = None
        # Sidecar writes are numbered so that a late, older snapshot never replaces a newer one.
        self._save_lock = threading.Lock()
        self._seq = 0
        self._saved_seq = 0
        self._last_save = 0.0

    # --- persistence (sync; run in a thread or from cleanup) ----------------------------

    def _prepare(self) -> None:
        """Open ``.part``; take done chunks and still-valid tokens from the sidecar."""
        h = self._r.header
        done: list[Any] = []
        try:
            state = json.loads(self._sidecar.read_bytes())
        except (OSError, ValueError):
            state = None
        if isinstance(state, dict) and state.get("file_id") == self._r.file_id:
            cutoff = time.time() + _EXPIRY_MARGIN_S
            for raw in state.get("tokens") or []:
                try:
                    token = Token.from_json(raw)
                except (ValueError, AttributeError):
                    continue
                if token.last < self._n and (
                    token.valid_until is None or token.valid_until > cutoff
                ):
                    self._tokens.append(token)
            if (
                state.get("version") == _STATE_VERSION
                and state.get("size") == h.plaintext_size
                and state.get("chunk_size") == h.chunk_size
                and isinstance(state.get("done"), list)
            ):
                done = state["done"]
        fd = _SharedFd(os.open(self._part, os.O_RDWR | os.O_CREAT, 0o666))
        self._fd = fd
        if done and fd.size() == h.plaintext_size:
            for run in done:
                if (
                    isinstance(run, list)
                    and len(run) == 2
                    and all(_is_count(v) for v in run)
                    and run[0] <= run[1] < self._n
                ):
                    self._done[run[0] : run[1] + 1] = b"\x01" * (run[1] - run[0] + 1)
        else:
            fd.truncate(0)  # bytes without a matching record are not trusted
        fd.truncate(h.plaintext_size)

    def _snapshot(self) -> tuple[int, bytes]:
        self._seq += 1
        h = self._r.header
        data = {
            "version": _STATE_VERSION,
            "file_id": self._r.file_id,
            "size": h.plaintext_size,
            "chunk_size": h.chunk_size,
            "done": _ranges(self._done),
            "tokens": [t.to_json() for t in self._tokens],
        }
        return self._seq, json.dumps(data).encode()

    def _write_sidecar(self, seq: int, data: bytes) -> None:
        with self._save_lock:
            if seq <= self._saved_seq:
                return
            if self._fd is not None:
                # Chunks recorded as done must be on disk first.
                self._fd.fsync()
            atomic_write_private(self._sidecar, data)
            self._saved_seq = seq

    async def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < _SAVE_INTERVAL_S:
            return
        self._last_save = now
        seq, data = self._snapshot()
        await asyncio.to_thread(self._write_sidecar, seq, data)

    def _abandon(self) -> None:
        """After a failure or interruption: record what we have (tokens above all)."""
        try:
            if self._fd is not None and not self._fd.closed:
                self._write_sidecar(*self._snapshot())
        except OSError as exc:
            log.warning("could not save download state to %s: %s", self._sidecar, exc)
        finally:
            if self._fd is not None:
                self._fd.close()

    def _finish(self) -> None:
        assert self._fd is not None
        self._fd.fsync()
        size = self._fd.size()
        self._fd.close()
        expected = self._r.manifest.size
        if size != expected:
            raise ClientError(f"{self._part} has {size} bytes, expected {expected}")
        if self._from_manifest and self._target.exists():
            raise ClientError(f"{self._target} already exists; choose another path with -o")
        os.replace(self._part, self._target)
        _fsync_dir(self._target.parent)
        self._sidecar.unlink(missing_ok=True)

    def _store(self, index: int, sealed: bytes) -> int:
        """Authenticate, decrypt and write one chunk (runs in a worker thread)."""
        plaintext = self._r.decryptor.open(index, sealed)  # ChunkAuthError names the chunk
        assert self._fd is not None
        self._fd.pwrite_all(plaintext, index * self._r.header.chunk_size)
        return len(plaintext)

    # --- bookkeeping (event loop only) --------------------------------------------------

    def _token_for(self, index: int) -> Token | None:
        for token in reversed(self._tokens):  # newest first: a rebought token is fresher
            if token.covers(index):
                return token
        return None

    def _has_uncovered(self) -> bool:
        while self._heap and self._heap[0] not in self._uncovered:
            heapq.heappop(self._heap)  # stale entry: covered, bought or done since
        return bool(self._heap)

    def _uncover(self, index: int) -> None:
        if (
            self._done[index]
            or index in self._uncovered
            or any(first <= index <= last for first, last in self._buying)
            or self._token_for(index) is not None
        ):
            return
        self._uncovered.add(index)
        heapq.heappush(self._heap, index)

    def _purchase_due(self) -> bool:
        if self._remaining == 0:
            return True
        if not self._has_uncovered():
            return False
        ahead = self._remaining - len(self._uncovered)  # bought but not yet fetched
        # Two ranges ahead keeps the fetchers busy while the next payment is made.
        # Two ranges ahead keeps the fetchers busy while the next payments are made; several
        # purchasers pay at once, so the doubling ramp is not paid for one latency at a time.
        return self._starved > 0 or ahead < 2 * max(1, self._next_range)

    def _take_run(self, size: int) -> tuple[int, int]:
        first = heapq.heappop(self._heap)
        self._uncovered.discard(first)
        count = 1
        while count < size and first + count in self._uncovered:
            self._uncovered.discard(first + count)
            count += 1
        self._buying.append((first, first + count - 1))
        return first, count

    def _end_buy(self, first: int, count: int) -> None:
        self._buying.remove((first, first + count - 1))
        # Whatever the gateway did not sell (it may clip a range) is bought later.
        for index in range(first, first + count):
            self._uncover(index)

    def _add_token(self, offer: _Offer, preimage: bytes) -> None:
        last = offer.first + offer.count - 1
        self._tokens.append(Token(offer.macaroon, preimage, offer.first, last, offer.valid_until))
        self._paid_msat += offer.amount_msat
        self._chunks_bought += offer.count

    def _drop(self, token: Token) -> None:
        if not any(t is token for t in self._tokens):
            return  # another fetcher already dropped it
        self._tokens = [t for t in self._tokens if t is not token]
        for index in range(token.first, token.last + 1):
            self._uncover(index)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # --- the purchaser ------------------------------------------------------------------

    async def _purchaser(self) -> None:
        maximum = self._c.config.max_range_chunks
        while True:
            async with self._cond:
                await self._cond.wait_for(self._purchase_due)
                if self._remaining == 0:
                    return
                first, count = self._take_run(min(self._next_range, maximum))
                self._next_range = min(self._next_range * 2, maximum)
            try:
                await self._buy(first, count)
            finally:
                self._end_buy(first, count)
            await self._notify()
            await self._save(force=True)  # a paid token must survive any interruption

    async def _buy(self, first: int, count: int) -> int:
        url = f"{self._r.chunk_url(first)}?count={count}"
        reply = await self._c._request("GET", url, ok=(200,), allow_402=True)
        if reply.status == 200:
            raise GatewayError(
                200,
                "Unexpected chunk",
                "the gateway served a chunk without payment, yet lists a price",
            )
        offer = self._check_offer(first, count, reply)
        if self._chunks_bought + offer.count > self._budget_chunks:
            raise PaymentRefused(
                f"the gateway keeps refusing paid tokens; stopped after buying "
                f"{self._chunks_bought} chunks ({format_msat(self._paid_msat)})"
            )
        payer = self._c.payer
        assert payer is not None
        log.debug("buying chunks %d-%d", offer.first, offer.first + offer.count - 1)
        # A payment in flight cannot be recalled: even if interrupted, keep its token.
        await _settle(
            payer.pay(offer.invoice, offer.amount_msat),
            lambda preimage: self._add_token(offer, preimage),
        )
        return offer.count

    def _check_offer(self, first: int, count: int, reply: _Reply) -> _Offer:
        """Everything that must hold before paying; PaymentRefused otherwise."""
        try:
            challenge = parse_challenge(reply.headers.getall("WWW-Authenticate", []))
        except ChallengeError as exc:
            raise GatewayError(402, "Payment required", str(exc)) from None
        problem = reply.problem()
        price = problem.get("price_msat")
        if not _is_count(price):
            raise GatewayError(402, "Payment required", "the challenge states no price_msat")
        limit = self._c.config.max_price_msat_per_chunk
        if price > limit:
            raise PaymentRefused(
                f"the gateway asks {format_msat(price)} per chunk, above your limit of "
                f"{format_msat(limit)} (max_price_msat_per_chunk); nothing was paid"
            )
        body_first, body_count = problem.get("first"), problem.get("count")
        scope = token_scope(challenge.macaroon)
        if scope is not None:
            # The macaroon is what the gateway will honour; the body must agree with it.
            if scope.file_id is not None and scope.file_id != self._r.file_id:
                raise PaymentRefused("the offered token is for another file; nothing was paid")
            got_first, got_count = scope.first, scope.last - scope.first + 1
            valid_until = scope.valid_until
            if (body_first is not None and body_first != got_first) or (
                body_count is not None and body_count != got_count
            ):
                raise PaymentRefused(
                    "the gateway's challenge contradicts its token's range; nothing was paid"
                )
        elif _is_count(body_first) and _is_count(body_count):
            got_first, got_count = body_first, body_count
            until = problem.get("valid_until")
            valid_until = until if _is_count(until) else None
        else:
            raise GatewayError(402, "Payment required", "the challenge states no chunk range")
        if got_first != first or not 1 <= got_count <= count:
            raise PaymentRefused(
                f"asked to buy chunks {first}-{first + count - 1}, was offered "
                f"{got_first}-{got_first + got_count - 1}; nothing was paid"
            )
        amount = price * got_count
        stated = problem.get("amount_msat")
        if stated is not None and stated != amount:
            raise PaymentRefused(
                f"the gateway states another amount than {got_count} chunks at "
                f"{format_msat(price)} each; nothing was paid"
            )
        # Also checked by LndPayer; here so that no Payer can be handed a wrong invoice.
        check_invoice_amount(challenge.invoice, amount)
        return _Offer(
            challenge.macaroon, challenge.invoice, got_first, got_count, valid_until, amount
        )

    # --- the fetchers -------------------------------------------------------------------

    async def _wait_token(self, index: int) -> Token:
        token = self._token_for(index)
        if token is not None:
            return token
        async with self._cond:
            self._starved += 1
            self._cond.notify_all()
            try:
                await self._cond.wait_for(lambda: self._token_for(index) is not None)
            finally:
                self._starved -= 1
        token = self._token_for(index)
        assert token is not None
        return token

    async def _fetcher(self, order: Iterator[int]) -> None:
        for index in order:  # shared iterator: fetchers take chunks in file order
            await self._fetch(index)

    async def _fetch(self, index: int) -> None:
        h = self._r.header
        # One byte more than expected, so an oversized answer fails the length check.
        limit = max(sealed_chunk_size(index, h.plaintext_size, h.chunk_size) + 1, _PROBLEM_LIMIT)
        url = self._r.chunk_url(index)
        while True:
            token = await self._wait_token(index) if self._paid else None
            headers = {"Authorization": token.authorization()} if token is not None else None
            reply = await self._c._request(
                "GET", url, ok=(200,), allow_402=True, headers=headers, limit=limit
            )
            if reply.status == 402:
                await self._refused(index, token, reply)
                continue
            if token is not None:
                token.used = True
            # Received bytes are kept even if the download is being interrupted.
            await _settle(
                asyncio.to_thread(self._store, index, reply.body),
                lambda length: self._mark_done(index, length),
            )
            await self._notify()
            await self._save()
            return

    async def _refused(self, index: int, token: Token | None, reply: _Reply) -> None:
        detail = _clean(reply.problem().get("detail")) or "payment required"
        if token is None:
            raise GatewayError(
                402, "Payment required", f"chunk {index} of a file listed as free: {detail}"
            )
        if not token.used and "expired" not in detail.lower():
            raise GatewayError(
                402,
                "Token refused",
                f"the gateway refused the token it just sold for chunks "
                f"{token.first}-{token.last}: {detail}",
            )
        log.debug(
            "token for chunks %d-%d refused (%s); buying again", token.first, token.last, detail
        )
        self._drop(token)
        await self._notify()

    def _mark_done(self, index: int, length: int) -> None:
        self._done[index] = 1
        self._remaining -= 1
        self._uncovered.discard(index)
        self._tokens = [
            t
            for t in self._tokens
            if not (t.covers(index) and all(self._done[t.first : t.last + 1]))
        ]
        if self._meter is not None:
            self._meter.update(length)

    # --- the whole ----------------------------------------------------------------------

    async def run(self) -> DownloadResult:
        payer = self._c.payer
        fees_before = _payer_fees(payer)
        h = self._r.header
        try:
            await asyncio.to_thread(self._prepare)
            needed = [i for i in range(self._n) if not self._done[i]]
            self._remaining = len(needed)
            for index in needed:
                self._uncover(index)
            # Rebuying after expiry is allowed, but never more than once per needed chunk.
            self._budget_chunks = len(self._uncovered) + len(needed)
            if self._paid and self._uncovered and payer is None:
                raise ClientError(
                    f"this file costs {format_msat(self._r.price_msat)} per chunk and no "
                    "Lightning node is configured to pay (set 'lnd' in the client configuration)"
                )
            left = sum(plaintext_chunk_size(i, h.plaintext_size, h.chunk_size) for i in needed)
            self._meter = Progress(
                h.plaintext_size,
                label=self._target.name,
                initial=h.plaintext_size - left,
                quiet=not self._show,
            )
            order = iter(needed)
            tasks = [
                self._fetcher(order) for _ in range(min(self._c.config.concurrency, len(needed)))
            ]
            if self._paid and needed:
                tasks += [self._purchaser() for _ in range(self._c.config.purchase_concurrency)]
            ok = False
            try:
                await _run_all(tasks)
                ok = True
            finally:
                self._meter.close(ok)
            await asyncio.to_thread(self._finish)
        except BaseException:
            self._abandon()
            raise
        return DownloadResult(
            path=self._target,
            size=h.plaintext_size,
            chunks=self._n,
            paid_msat=self._paid_msat,
            fees_msat=max(0, _payer_fees(payer) - fees_before),
            chunks_bought=self._chunks_bought,
        )
