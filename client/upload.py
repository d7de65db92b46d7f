"""The upload engine: encrypt a file chunk by chunk and PUT the chunks; resume from saved state.

A resumed upload reuses the saved key and file id, so its chunks are byte-identical and only
the missing ones are sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from client.config import ClientConfig, atomic_write_private
from client.errors import ClientError, GatewayError
from client.files import _STATE_VERSION, _SharedFd
from client.http import _b64url_any, _is_count, _Requester
from client.progress import Progress
from client.tasks import _run_all
from storage.capability import ShareLink
from storage.crypto import (
    CHUNK_OVERHEAD,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    FileEncryptor,
    b64url_encode,
    decode_file_id,
    decode_key,
    encode_file_id,
    encode_key,
    new_file_id,
    new_file_key,
    plaintext_chunk_size,
)
from storage.manifest import Manifest, seal_manifest

log = logging.getLogger("bitcache.client")


class _Uploader(_Requester, Protocol):
    """What the upload engine needs of :class:`BitcacheClient`."""

    @property
    def config(self) -> ClientConfig: ...


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


# --- the engine -------------------------------------------------------------------------------


async def _upload_file(
    client: _Uploader,
    cache_dir: Path,
    path: Path,
    price_msat: int | None,
    progress: bool,
    chunk_size: int,
) -> ShareLink:
    """:meth:`BitcacheClient.upload`: upload state is kept under ``cache_dir``."""
    path = Path(path)
    if price_msat is not None and price_msat < 0:
        raise ClientError("the price must not be negative")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ClientError(f"chunk size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    source = await asyncio.to_thread(_Source.open, path)
    try:
        return await _upload(client, cache_dir, source, path.name, price_msat, progress, chunk_size)
    finally:
        source.fd.close()


def _upload_state_path(cache_dir: Path, source: _Source) -> Path:
    ident = f"{source.path}\0{source.size}\0{source.mtime_ns}"
    digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()
    return cache_dir / "uploads" / f"{digest}.json"


def _new_upload(client: _Uploader, source: _Source, name: str, chunk_size: int) -> _UploadState:
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
    return _UploadState(client.config.gateway_url, file_id, key, chunk_size, sealed)


async def _upload(
    client: _Uploader,
    cache_dir: Path,
    source: _Source,
    name: str,
    price_msat: int | None,
    show: bool,
    chunk_size: int,
) -> ShareLink:
    base = client.config.gateway_url
    state_path = _upload_state_path(cache_dir, source)
    state = await asyncio.to_thread(_UploadState.load, state_path)
    if state is not None and (state.gateway != base or state.chunk_size != chunk_size):
        state = None
    while True:
        resumed = state is not None
        if state is None:
            state = _new_upload(client, source, name, chunk_size)
            # Saved before the gateway hears of the file, so any interruption can resume.
            await asyncio.to_thread(atomic_write_private, state_path, state.to_bytes())
        enc = FileEncryptor(state.key, state.file_id, source.size, state.chunk_size)
        body: dict[str, Any] = {
            "header": enc.header.to_json_dict(),
            "manifest": b64url_encode(state.manifest),
        }
        if price_msat is not None:
            body["price_msat"] = price_msat
        reply = await client._request(
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
            await _put_chunks(client, enc, source, file_id, todo, meter)
            sent.update(todo)
            if await asyncio.to_thread(source.changed):
                raise ClientError(f"{name} changed while it was being uploaded; upload again")
            done = await client._request(
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
    client: _Uploader,
    enc: FileEncryptor,
    source: _Source,
    file_id: str,
    todo: list[int],
    meter: Progress,
) -> None:
    url = f"{client.config.gateway_url}/v1/files/{file_id}/chunks/"
    order = iter(todo)

    async def worker() -> None:
        # Each worker holds one chunk at a time, so memory stays ~concurrency chunks.
        for index in order:
            sealed = await asyncio.to_thread(_read_and_seal, enc, source, index)
            await client._request(
                "PUT",
                f"{url}{index}",
                data=sealed,
                headers={"Content-Type": "application/octet-stream"},
                ok=(200, 201),
            )
            meter.update(len(sealed) - CHUNK_OVERHEAD)

    await _run_all([worker() for _ in range(min(client.config.concurrency, len(todo)))])
