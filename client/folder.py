"""Folder links: share a whole folder, and download one, paying per chunk as for a file.

Sharing uploads every file as an ordinary paid file (its own key and share capability), then
the folder manifest (docs/format.md §16) as one more file, free to fetch, encrypted under a
fresh key that only the folder link holds. Downloading reads that manifest, refuses any
path that could leave the chosen folder, and fetches each file with the usual paid download,
so payment, resume and the owner's free traffic work exactly as for a single file.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from client.api import BitcacheClient
from client.download import _Download
from client.errors import ClientError, GatewayError, PaymentRefused
from client.payer import format_msat
from client.progress import Progress, format_bytes
from client.remote import _open_remote
from client.sync.naming import STATE_DIR, skipped
from client.tasks import _run_all
from storage.crypto import (
    DEFAULT_CHUNK_SIZE,
    FileEncryptor,
    b64url_encode,
    encode_file_id,
    new_file_id,
    new_file_key,
)
from storage.errors import FormatError
from storage.folder_link import (
    FOLDER_MEDIA_TYPE,
    MAX_FOLDER_MANIFEST_BYTES,
    FolderFile,
    FolderLink,
    FolderManifest,
)
from storage.manifest import Manifest, seal_manifest
from storage.vault_tree import check_path

# Files up to this size are fetched several at a time (see download_folder).
SMALL_FILE_BYTES = 4 << 20
SMALL_FILES_IN_FLIGHT = 4


@dataclass(frozen=True)
class FolderResult:
    path: Path
    files: int
    size: int
    chunks: int
    paid_msat: int
    fees_msat: int
    chunks_bought: int
    skipped: int  # files already complete from an earlier run


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """Regular files under ``folder`` as (relative path, path); symlinks and sync state are
    left out, and so is any name the format cannot hold."""
    out: list[tuple[str, Path]] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if skipped(entry.name) or entry.name == STATE_DIR:
                    continue
                rel = prefix + entry.name
                try:
                    check_path(rel)
                except ValueError:
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    walk(Path(entry.path), rel + "/")
                elif stat.S_ISREG(st.st_mode):
                    out.append((rel, Path(entry.path)))

    walk(folder, "")
    return out


async def share_folder(client: BitcacheClient, folder: Path, progress: bool = True) -> FolderLink:
    """Uploads every file of ``folder`` and a folder manifest; returns the folder link."""
    folder = await asyncio.to_thread(folder.resolve)
    files: list[FolderFile] = []
    for rel, path in await asyncio.to_thread(folder_files, folder):
        size = path.stat().st_size
        link = await client.upload(path, progress=progress)
        files.append(FolderFile(rel, size, link.file_id, link.key))
    try:
        manifest = FolderManifest(name=folder.name or "folder", files=tuple(files))
    except FormatError as exc:
        raise ClientError(f"cannot share {folder}: {exc}") from None
    return await upload_manifest(client, manifest.name, manifest.to_plaintext())


async def upload_manifest(client: BitcacheClient, name: str, plaintext: bytes) -> FolderLink:
    """A folder manifest's bytes as a file of its own, free to fetch (the files are what is
    paid for). Takes bytes, not a FolderManifest, so tests can store a hostile one."""
    key, file_id = new_file_key(), new_file_id()
    enc = FileEncryptor(key, file_id, len(plaintext), DEFAULT_CHUNK_SIZE)
    manifest = Manifest(
        name=name,
        size=len(plaintext),
        media_type=FOLDER_MEDIA_TYPE,
        chunk_size=DEFAULT_CHUNK_SIZE,
        modified=None,
    )
    sealed_manifest = seal_manifest(enc.keys, file_id, manifest)
    base = client.config.gateway_url
    fid = encode_file_id(file_id)
    await client.call(
        "POST",
        "/v1/files",
        json_body={
            "header": enc.header.to_json_dict(),
            "manifest": b64url_encode(sealed_manifest),
            "price_msat": 0,
        },
    )
    size = DEFAULT_CHUNK_SIZE
    for index in range(enc.chunk_count):
        sealed = enc.seal(index, plaintext[index * size : (index + 1) * size])
        await client._request(
            "PUT",
            f"{base}/v1/files/{fid}/chunks/{index}",
            data=sealed,
            headers={"Content-Type": "application/octet-stream"},
            ok=(200, 201),
        )
    await client.call("POST", f"/v1/files/{fid}/complete")
    return FolderLink(base, file_id, key)


async def read_folder_manifest(client: BitcacheClient, link: FolderLink) -> FolderManifest:
    """Fetches and checks the folder manifest (a wrong key stops before anything is paid)."""
    remote = await _open_remote(client, link.manifest_link())
    if remote.manifest.media_type != FOLDER_MEDIA_TYPE:
        raise ClientError("this link does not point at a shared folder")
    if remote.header.plaintext_size > MAX_FOLDER_MANIFEST_BYTES:
        raise ClientError("the folder manifest is too large")
    with tempfile.TemporaryDirectory(prefix="bitcache-folder-") as tmp:
        target = Path(tmp) / "manifest"
        await client.download(link.manifest_link(), out=target, progress=False)
        data = await asyncio.to_thread(target.read_bytes)
    return FolderManifest.from_plaintext(data)


async def folder_info(client: BitcacheClient, link: FolderLink | str) -> list[str]:
    """What a folder link holds and what it costs (nothing is paid): one line per file."""
    if isinstance(link, str):
        link = FolderLink.parse(link)
    folder = await read_folder_manifest(client, link)
    total = chunks = 0
    lines = []
    for f in sorted(folder.files, key=lambda f: f.path):
        remote = await _open_remote(client, f.link(link.gateway))
        total += remote.price_msat * remote.header.chunk_count
        chunks += remote.header.chunk_count
        # repr: a name from someone else's manifest must not drive the terminal.
        lines.append(f"  {f.path!r}  {format_bytes(f.size)}")
    price = "free" if total == 0 else f"{format_msat(total)} for all {chunks} chunks"
    return [
        f"folder:   {folder.name!r}",
        f"files:    {len(folder.files)}, {format_bytes(folder.total_size)}",
        f"price:    {price}",
        f"gateway:  {link.gateway}",
        *lines,
    ]


def _target(root: Path, rel: str) -> Path:
    """Where ``rel`` goes under ``root``; refuses anything that would land outside it
    (the manifest's paths are checked already, but a symlink in the folder is not)."""
    check_path(rel)
    target = root.joinpath(*rel.split("/"))
    real_root = os.path.realpath(root)
    parent = os.path.realpath(target.parent)
    if os.path.commonpath([real_root, parent]) != real_root or target.is_symlink():
        raise ClientError(f"refusing to write {rel!r}: it would land outside {root}")
    return target


def _already_done(target: Path, size: int) -> bool:
    part = target.with_name(target.name + ".part")
    try:
        st = target.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise ClientError(f"{target} exists and is not a file")
    return st.st_size == size and not part.exists()


@dataclass
class _Totals:
    chunks: int = 0
    paid: int = 0
    fees: int = 0
    bought: int = 0
    skipped: int = 0


async def _fetch_file(
    client: BitcacheClient,
    gateway: str,
    root: Path,
    f: FolderFile,
    target: Path,
    progress: bool,
    totals: _Totals,
) -> None:
    """One file of the folder, exactly as through its own share link (paid, resumable)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _target(root, f.path)  # again, now that its folders exist
    if _already_done(target, f.size):
        totals.skipped += 1
        return
    remote = await _open_remote(client, f.link(gateway))
    if remote.header.plaintext_size != f.size:
        raise GatewayError(200, "Bad answer", f"{f.path!r} is not the size the folder says")
    if remote.state != "complete":
        raise ClientError(f"{f.path!r} is still being uploaded; try again later")
    limit = client.config.max_price_msat_per_chunk
    if remote.price_msat > limit:
        raise PaymentRefused(
            f"{f.path!r} costs {format_msat(remote.price_msat)} per chunk, above your limit "
            f"of {format_msat(limit)} (max_price_msat_per_chunk)"
        )
    result = await _Download(client, remote, target, False, progress).run()
    totals.chunks += result.chunks
    totals.paid += result.paid_msat
    totals.fees += result.fees_msat
    totals.bought += result.chunks_bought


async def download_folder(
    client: BitcacheClient,
    link: FolderLink | str,
    out: Path | None = None,
    progress: bool = True,
) -> FolderResult:
    """Downloads every file of a shared folder into ``out`` (default: ./<folder name>),
    paying per chunk; files finished by an earlier run are kept, so a re-run resumes.

    Small files go several at a time under one progress line (each costs a payment and a
    few requests, which would otherwise dominate); large ones one after another, each with
    its own progress, since their chunks are already fetched in parallel.
    """
    if isinstance(link, str):
        link = FolderLink.parse(link)
    folder = await read_folder_manifest(client, link)
    root = out if out is not None else Path.cwd() / folder.name
    # Every path is checked before anything is created or written.
    targets = sorted(((f, _target(root, f.path)) for f in folder.files), key=lambda t: t[0].path)
    root.mkdir(parents=True, exist_ok=True)
    totals = _Totals()
    small = [t for t in targets if t[0].size <= SMALL_FILE_BYTES]
    large = [t for t in targets if t[0].size > SMALL_FILE_BYTES]
    if small:
        meter = Progress(
            sum(f.size for f, _ in small),
            label=f"{len(small)} small files",
            quiet=not progress,
        )
        queue = iter(small)

        async def worker() -> None:
            for f, target in queue:
                await _fetch_file(client, link.gateway, root, f, target, False, totals)
                meter.update(f.size)

        ok = False
        try:
            await _run_all([worker() for _ in range(min(SMALL_FILES_IN_FLIGHT, len(small)))])
            ok = True
        finally:
            meter.close(ok)
    for number, (f, target) in enumerate(large, 1):
        if progress:  # which large file of how many; then its own progress bar
            print(f"({number}/{len(large)}) {f.path!r}", file=sys.stderr, flush=True)
        await _fetch_file(client, link.gateway, root, f, target, progress, totals)
    return FolderResult(
        path=root,
        files=len(folder.files),
        size=folder.total_size,
        chunks=totals.chunks,
        paid_msat=totals.paid,
        fees_msat=totals.fees,
        chunks_bought=totals.bought,
        skipped=totals.skipped,
    )
