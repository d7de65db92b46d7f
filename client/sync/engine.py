"""One two-way pass between a folder and the vault.

Each path is compared three ways: as it was when last in step (the local state), as it is on
disk, and as the vault says. A side that did not move since the last pass takes the other's
change; when both moved to different contents, the vault's version keeps the name and the
local one becomes a Syncthing-style conflict copy, so nothing is lost. An edit beats a delete.
Writes to the vault are compare-and-set: if another device wrote first, the pass reads its
changes and decides again. After the two-way part, a pass purges trash entries older than
the tenant's trash_days and collects chunk files nothing names any more (gc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from client.progress import Progress
from client.sync import gc
from client.sync.chunker import Chunked, chunk_file, make_chunker
from client.sync.naming import STATE_DIR, conflict_name, skipped
from client.sync.state import Brief, Remote, State, Synced
from client.sync.vault import Vault
from client.tasks import _run_all
from storage.crypto import CHUNK_OVERHEAD, MIN_CHUNK_SIZE
from storage.file_batch import MAX_BATCH_CHUNK_BYTES, MAX_BATCH_ITEMS
from storage.vault import ChunkRef, chunk_mac, new_object_id, padme_length
from storage.vault import chunk_file as locate_chunk
from storage.vault_tree import Entry, Version, check_path

log = logging.getLogger("bitcache.sync")
MAX_ROUNDS = 10
# Chunks sent at a time: 8 of the usual ~1 MiB, up to 32 when they are small (a tree of
# small files is latency-bound: three gateway requests per chunk file). 32 beat 8 in 5 of
# 6 paired runs of 400 files of ~100 KiB here (median 14 s against 21 s); the bound keeps
# about 8 MiB of chunks in flight.
UPLOAD_WORKERS = 8
UPLOAD_WORKERS_SMALL = 32
UPLOAD_IN_FLIGHT = 8 << 20
# A small file's one chunk goes with others in one POST /v1/files/batch (one request and one
# gateway transaction for up to 64 chunk files) instead of three requests of its own; a
# few batches are in flight at once. Chunks of larger files keep the single path.
BATCH_CHUNK_MAX = 1 << 20
BATCHES_IN_FLIGHT = 4
After = Callable[[], None]


@dataclass(frozen=True)
class Stat:
    kind: str  # "file" or "dir"
    size: int
    mtime_ns: int
    inode: int


Upload = tuple[str, str, "Stat", Chunked, Entry | None]


@dataclass
class Report:
    uploaded_bytes: int = 0  # chunk bytes actually sent to the gateway
    uploaded_chunks: int = 0
    reused_chunks: int = 0  # chunks the gateway already held (an earlier, killed run)
    downloaded_bytes: int = 0
    fetched_chunks: int = 0
    hashed_files: int = 0
    sent_objects: int = 0
    conflicts: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    purged_objects: int = 0  # trash entries purged (expired, or the trash emptied)
    collected_chunks: int = 0  # chunk files deleted from the gateway: nothing names them


def scan(folder: Path) -> dict[str, Stat]:
    """Every file and folder under ``folder`` but our state (symlinks are not followed)."""
    out: dict[str, Stat] = {}

    def walk(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            for entry in it:
                if skipped(entry.name) or (not prefix and entry.name == STATE_DIR):
                    continue
                rel = prefix + entry.name
                try:
                    check_path(rel)
                except ValueError:
                    log.warning("skipping %r: not a name the vault can hold", rel)
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    out[rel] = Stat("dir", 0, 0, st.st_ino)
                    walk(entry.path, rel + "/")
                elif stat.S_ISREG(st.st_mode):
                    out[rel] = Stat("file", st.st_size, st.st_mtime_ns, st.st_ino)

    walk(str(folder), "")
    return out


def _matches(s: Synced, st: Stat | None) -> bool:
    return (
        st is not None
        and st.kind == s.kind
        and (s.kind == "dir" or (st.size, st.mtime_ns, st.inode) == (s.size, s.mtime_ns, s.inode))
    )


def _unchanged(s: Synced, st: Stat | None, brief: Brief | None) -> bool:
    """In step on both sides: the path is as synced here, and its object (live, same
    kind) still has the version synced (a folder has none)."""
    return (
        brief is not None
        and brief.deleted is None
        and brief.kind == s.kind
        and brief.n == s.n
        and _matches(s, st)
    )


def _workers(refs: list[ChunkRef]) -> int:
    if not refs:
        return 1
    mean = max(1, sum(r.length for r in refs) // len(refs))
    wanted = max(UPLOAD_WORKERS, min(UPLOAD_WORKERS_SMALL, UPLOAD_IN_FLIGHT // mean))
    return min(wanted, len(refs))


def _batches(items: list[tuple[str, int, ChunkRef]]) -> list[list[tuple[str, int, ChunkRef]]]:
    """Small chunks grouped within the gateway's bounds on a batch (count, sealed bytes)."""
    out: list[list[tuple[str, int, ChunkRef]]] = []
    current: list[tuple[str, int, ChunkRef]] = []
    size = 0
    for item in items:
        sealed = max(MIN_CHUNK_SIZE, padme_length(item[2].length + 1)) + CHUNK_OVERHEAD
        if current and (len(current) == MAX_BATCH_ITEMS or size + sealed > MAX_BATCH_CHUNK_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += sealed
    if current:
        out.append(current)
    return out


def _content(size: int, refs: Iterable[ChunkRef]) -> Version:
    chunks = [r.to_json() for r in refs]
    return Version(n=1, size=size, mtime_ns=0, time=0, device="x", chunks=chunks)


def _same(a: Version, b: Version) -> bool:
    return hmac.compare_digest(a.content_id(), b.content_id())


class SyncEngine:
    def __init__(self, vault: Vault, folder: Path, device: str, *, progress: bool = False) -> None:
        self.vault = vault
        self.folder = folder.absolute()
        self.device = device
        self.progress = progress
        self.state = State(self.folder)
        self.chunker = make_chunker(vault.keys)
        self._file_ids: dict[bytes, str] = {}
        account = self.state.get("account")
        if account is None:
            self.state.set("account", vault.account)
        elif account != vault.account:
            raise ValueError(f"{folder} is synced with another account")

    def close(self) -> None:
        self.state.close()

    # --- reading the vault ----------------------------------------------------------------------

    async def pull(self, wait: int = 0) -> bool:
        """Reads the vault's changes into the local state; True if there were any."""
        counter, changed, log = await self.vault.changes_and_log(self.state.counter, wait)
        if counter == self.state.counter and not changed and log is None:
            return False
        # Chunks a write stopped naming: a writer without the deletion log (the web page
        # trims versions) leaves them to whichever device notices (over-listing is safe).
        remote = self.state.remote()
        noticed: set[str] = set()
        for oid, entry in changed.items():
            if oid in remote.briefs:
                noticed |= gc.dropped(remote[oid], entry, self.file_id)
        self.state.apply_remote(counter, changed, log, noticed)
        return True

    def file_id(self, mac: bytes) -> str:
        """The chunk file id of a chunk MAC (cached: a collection looks up every chunk)."""
        fid = self._file_ids.get(mac)
        if fid is None:
            fid = self._file_ids[mac] = locate_chunk(self.vault.keys, mac).file_id_text
        return fid

    async def commit(self, writes: dict[str, Entry | None]) -> bool:
        """Writes at the counter of the local state; False if another device wrote first.
        The chunk files the write stops naming (dropped versions, purged objects) go into
        the deletion log's pending list in the same compare-and-set, so a kill after it
        leaves them for the next collection rather than stored for ever."""
        remote = self.state.remote()
        dropped: set[str] = set()
        for oid, new in writes.items():
            if oid in remote.briefs:
                dropped |= gc.dropped(remote[oid], new, self.file_id)
        current = self.state.log()
        new_log = None
        if not dropped <= set(current.pending):
            new_log, overflow = gc.with_pending(current, dropped)
            if overflow:
                log.warning("%d unused chunk files left stored: the GC log is full", overflow)
        return await self.vault.write(self.state.counter, writes, new_log) is not None

    # --- one pass ---------------------------------------------------------------------------------

    async def run_once(self) -> Report:
        report = Report()
        await self.pull()
        await self._two_way(report)
        await self.purge_trash(report)
        await self.collect(report)
        return report

    async def purge_trash(self, report: Report, older_than: int | None = None) -> None:
        """Removes trash entries that went to the trash before ``older_than`` (Unix time;
        default: the tenant's trash_days ago, and nothing if it keeps the trash for ever)."""
        if older_than is None:
            if self.vault.trash_days is None:
                return
            older_than = int(time.time()) - self.vault.trash_days * 86400
        refused = 0
        while refused < MAX_ROUNDS:
            remote = self.state.remote()
            expired = [
                oid
                for oid, b in remote.briefs.items()
                if b.deleted is not None and b.deleted < older_than
            ]
            if not expired:
                return
            # A group at a time, each collected before the next, so the log's pending list
            # never has to hold a whole large trash.
            group: dict[str, Entry | None] = {}
            chunks = 0
            for oid in expired:
                chunks += len(gc.file_ids(remote[oid], self.file_id))
                if group and chunks > gc.MAX_PENDING_IDS // 2:
                    break
                group[oid] = None
            done = await self.commit(group)
            await self.pull()
            if not done:
                refused += 1
                continue
            report.purged_objects += len(group)
            report.changed.extend(
                f"purged {remote.briefs[oid].path} from the trash" for oid in group
            )
            await self.collect(report)
        raise RuntimeError("the vault kept changing while purging the trash; run it again")

    async def collect(self, report: Report) -> None:
        """Deletes the pending chunk files nothing in the vault names, each batch with the
        log that records it in one compare-and-set (gc.py): a device that names one of them
        again must have read that log first, so it sends the chunk again."""
        for _ in range(MAX_ROUNDS * 10):
            log = self.state.log()
            noticed = self.state.noticed() - set(log.pending)
            if not log.pending and not noticed:
                return
            if noticed:
                log, _ = gc.with_pending(log, noticed)
            remote = self.state.remote()
            names = gc.named((remote[oid] for oid in remote), self.file_id)
            step = gc.collect(log, names, self.state.counter + 1)
            if step is None:
                self.state.forget_noticed()  # all named again
                return
            garbage, new_log = step
            written = await self.vault.write(self.state.counter, {}, new_log, garbage)
            if written is not None:
                # Every noticed id is now deleted, pending in the log, or named.
                self.state.forget_noticed()
                report.collected_chunks += len(garbage)
            await self.pull()
        raise RuntimeError("the vault kept changing while collecting; run it again")

    async def _two_way(self, report: Report) -> None:
        for _ in range(MAX_ROUNDS):
            writes, after, again = await self._round(report)
            if not writes:
                if not again:
                    return
                continue
            if not await self.commit(writes):
                await self.pull()  # another device wrote first: merge with what it did
                continue
            report.sent_objects += len(writes)
            for apply in after:
                apply()
            await self.pull()
        raise RuntimeError("the folder kept changing during the sync; run it again")

    async def _round(self, report: Report) -> tuple[dict[str, Entry | None], list[After], bool]:
        """Decides and does one round; returns the vault writes, what to record once they
        are accepted, and whether another round is needed before writing."""
        local = await asyncio.to_thread(scan, self.folder)
        synced = self.state.synced()
        remote = self.state.remote()
        live = remote.live()
        writes: dict[str, Entry | None] = {}
        after: list[After] = []
        now = int(time.time())
        conflicts_before = len(report.conflicts)

        if await self._remote_moves(synced, remote, local, report):
            return {}, [], True
        self._local_moves(synced, remote, local, live, writes, after, report)

        renamed_to = {e.path for e in writes.values() if e is not None}
        uploads: list[Upload] = []
        downloads: list[tuple[str, str, Entry]] = []
        dirs: list[str] = []
        for path in sorted(set(local) | set(synced) | set(live)):
            if path in renamed_to:
                continue
            st, s = local.get(path), synced.get(path)
            oid = live.get(path) or (s.oid if s else None)
            if s is not None and s.oid == oid and _unchanged(s, st, remote.briefs.get(oid)):
                continue  # the common case, decided without reading the object
            entry = remote.get(oid) if oid else None
            if (
                (st is not None and st.kind == "dir")
                or (entry is not None and entry.kind == "dir")
                or (st is None and entry is None and s is not None and s.kind == "dir")
            ):
                dirs.append(path)
                continue
            lc = st is not None and (s is None or not _matches(s, st))
            rc = s is not None and (
                entry is None
                or s.oid != oid
                or entry.deleted is not None
                or entry.current is None
                or entry.current.n != s.n
            )
            gone = entry is None or entry.deleted is not None
            if st is None:
                if s is None:
                    if entry is not None and not gone and entry.current is not None:
                        downloads.append((path, oid, entry))  # type: ignore[arg-type]
                elif gone:
                    self.state.drop_synced(path)
                elif not rc:
                    assert entry is not None and oid is not None
                    writes[oid] = entry.model_copy(update={"deleted": now})  # into the trash
                    after.append(partial(self.state.drop_synced, path))
                    report.changed.append(f"deleted {path}")
                else:  # deleted here, edited there: the edit wins
                    downloads.append((path, oid, entry))  # type: ignore[arg-type]
                continue
            if s is not None and not lc:
                if not rc:
                    continue
                if gone:
                    await asyncio.to_thread(self._remove, path)
                    self.state.drop_synced(path)
                    report.changed.append(f"removed {path}")
                else:
                    downloads.append((path, oid, entry))  # type: ignore[arg-type]
                continue
            chunked = await asyncio.to_thread(
                chunk_file, self.vault.keys, self.chunker, str(self.folder / path)
            )
            report.hashed_files += 1
            mine = _content(chunked.size, chunked.refs)
            if s is not None and not rc and s.kind == "file":
                base = _content(s.size, [ChunkRef.from_json(c) for c in s.chunks])
                if _same(base, mine):  # touched, not changed
                    self.state.put_synced(self._synced_from(s, st))
                    continue
            theirs = None if gone or entry is None else entry.current
            if theirs is not None and _same(theirs, mine):
                assert entry is not None and oid is not None
                self.state.put_synced(self._synced(path, oid, entry, st, chunked))
                continue
            if theirs is not None and (rc or s is None):
                # Both sides changed: the vault's version keeps the name, ours becomes a copy.
                copy = conflict_name(path, self.device, time.time())
                await asyncio.to_thread(self._move, path, copy)
                report.conflicts.append(copy)
                self.state.drop_synced(path)
                downloads.append((path, oid, entry))  # type: ignore[arg-type]
                continue
            same_object = s is not None and entry is not None and s.oid == oid
            target = oid if same_object else new_object_id()
            assert target is not None
            uploads.append((path, target, st, chunked, entry if same_object else None))

        for path in sorted(dirs, reverse=True):  # deepest first, after the files in them
            st, s = local.get(path), synced.get(path)
            oid = live.get(path) or (s.oid if s else None)
            self._dir(
                path, st, s, oid, remote.get(oid) if oid else None, writes, after, now, report
            )
        if downloads:
            await self._download_all(downloads, synced, local, report)
        if uploads:
            await self._upload_all(uploads, writes, after, now, report)
        # A conflict copy made this round is a new local file: the next round uploads it.
        return writes, after, len(report.conflicts) > conflicts_before

    async def _remote_moves(
        self,
        synced: dict[str, Synced],
        remote: Remote,
        local: dict[str, Stat],
        report: Report,
    ) -> bool:
        """Follows renames and moves made elsewhere without downloading anything."""
        moved = False
        for path, s in synced.items():
            brief = remote.briefs.get(s.oid)
            if brief is None or brief.deleted is not None or brief.path == path:
                continue
            entry = remote[s.oid]
            cur = entry.current
            if (
                s.kind == "file"
                and _matches(s, local.get(path))
                and entry.path not in local
                and cur is not None
                and cur.n == s.n
            ):
                await asyncio.to_thread(self._move, path, entry.path)
                st = await asyncio.to_thread(self._stat, entry.path)
                self.state.put_synced(self._synced(entry.path, s.oid, entry, st))
                report.changed.append(f"moved {path} -> {entry.path}")
            # Otherwise the local file is new here and the vault's one downloads.
            self.state.drop_synced(path)
            moved = True
        return moved

    def _local_moves(
        self,
        synced: dict[str, Synced],
        remote: Remote,
        local: dict[str, Stat],
        live: dict[str, str],
        writes: dict[str, Entry | None],
        after: list[After],
        report: Report,
    ) -> None:
        """A new path with the inode, size and mtime of a vanished one is a rename: the
        object's path changes and no byte is read or sent."""
        gone = {
            (s.inode, s.size, s.mtime_ns): s
            for p, s in synced.items()
            if p not in local and s.kind == "file"
        }
        for path, st in local.items():
            if path in synced or path in live or st.kind != "file":
                continue
            s = gone.pop((st.inode, st.size, st.mtime_ns), None)
            entry = remote.get(s.oid) if s else None
            if s is None or entry is None or entry.deleted is not None:
                continue
            if entry.path != s.path or entry.current is None or entry.current.n != s.n:
                continue
            writes[s.oid] = entry.model_copy(update={"path": path})
            after.append(self._relink(s, path, st))
            live.pop(s.path, None)
            live[path] = s.oid
            synced.pop(s.path)
            synced[path] = s
            report.changed.append(f"renamed {s.path} -> {path}")

    # --- folders ---------------------------------------------------------------------------------

    def _dir(
        self,
        path: str,
        st: Stat | None,
        s: Synced | None,
        oid: str | None,
        entry: Entry | None,
        writes: dict[str, Entry | None],
        after: list[After],
        now: int,
        report: Report,
    ) -> None:
        live = entry is not None and entry.deleted is None
        if st is not None and not live:
            if s is not None and entry is not None:  # deleted elsewhere
                with contextlib.suppress(OSError):
                    os.rmdir(self.folder / path)
                if not (self.folder / path).exists():
                    self.state.drop_synced(path)
                    return
            new_oid = (
                oid if (oid and entry is not None and entry.kind == "dir") else new_object_id()
            )
            writes[new_oid] = Entry(kind="dir", path=path, counter=0)
            after.append(
                partial(self.state.put_synced, Synced(path, new_oid, "dir", 0, 0, 0, 0, "[]"))
            )
        elif st is None and live and s is not None:
            assert oid is not None and entry is not None
            writes[oid] = entry.model_copy(update={"deleted": now})
            after.append(partial(self.state.drop_synced, path))
        elif st is None and live:
            (self.folder / path).mkdir(parents=True, exist_ok=True)
            assert oid is not None
            self.state.put_synced(Synced(path, oid, "dir", 0, 0, 0, 0, "[]"))
            report.changed.append(f"created folder {path}")
        elif st is not None and live and s is None:
            assert oid is not None
            self.state.put_synced(Synced(path, oid, "dir", 0, 0, 0, 0, "[]"))
        elif st is None and s is not None:
            self.state.drop_synced(path)

    # --- uploads ---------------------------------------------------------------------------------

    async def _upload_all(
        self,
        uploads: list[Upload],
        writes: dict[str, Entry | None],
        after: list[After],
        now: int,
        report: Report,
    ) -> None:
        keep = self.vault.keep_versions
        todo: dict[bytes, tuple[str, int, ChunkRef]] = {}
        for path, _, _, chunked, _ in uploads:
            offset = 0
            for ref in chunked.refs:
                fid = locate_chunk(self.vault.keys, ref.mac).file_id_text
                if not self.state.is_uploaded(fid) and ref.mac not in todo:
                    todo[ref.mac] = (path, offset, ref)
                offset += ref.length
        meter = Progress(
            sum(r.length for _, _, r in todo.values()), label="upload", quiet=not self.progress
        )
        sizes = {path: chunked.size for path, _, _, chunked, _ in uploads}

        def batched(item: tuple[str, int, ChunkRef]) -> bool:
            path, offset, ref = item  # a whole small file, alone in its chunk
            return offset == 0 and ref.length == sizes[path] and ref.length <= BATCH_CHUNK_MAX

        small = [t for t in todo.values() if batched(t)]
        large = [t for t in todo.values() if not batched(t)]
        order = iter(large)
        batches = iter(_batches(small))
        failed: set[str] = set()

        def done(ref: ChunkRef, fid: str, sent: bool) -> None:
            self.state.mark_uploaded(fid)
            if sent:
                report.uploaded_bytes += ref.length
                report.uploaded_chunks += 1
            else:
                report.reused_chunks += 1
            meter.update(ref.length)

        async def read(path: str, offset: int, ref: ChunkRef) -> bytes | None:
            data = await asyncio.to_thread(self._read, path, offset, ref.length)
            if data is None or not hmac.compare_digest(chunk_mac(self.vault.keys, data), ref.mac):
                failed.add(path)  # changed under us: next pass
                return None
            return data

        async def worker() -> None:
            for path, offset, ref in order:
                data = await read(path, offset, ref)
                if data is not None:
                    done(ref, *await self.vault.upload_chunk(ref, data))

        async def batcher() -> None:
            for batch in batches:
                chunks = []
                for path, offset, ref in batch:
                    data = await read(path, offset, ref)
                    if data is not None:
                        chunks.append((ref, data))
                if chunks:
                    stored = await self.vault.upload_batch(chunks)
                    for (ref, _), (fid, sent) in zip(chunks, stored, strict=True):
                        done(ref, fid, sent)

        ok = False
        try:
            await _run_all(
                [worker() for _ in range(_workers([r for _, _, r in large]) if large else 0)]
                + [batcher() for _ in range(BATCHES_IN_FLIGHT if small else 0)]
            )
            ok = True
        finally:
            meter.close(ok)
        for path, oid, st, chunked, entry in uploads:
            if path in failed:
                continue
            versions = list(entry.versions) if entry else []
            n = versions[-1].n + 1 if versions else 1
            version = Version(
                n=n,
                size=chunked.size,
                mtime_ns=st.mtime_ns,
                time=now,
                device=self.device,
                chunks=[r.to_json() for r in chunked.refs],
            )
            new = Entry(
                kind="file",
                path=path,
                counter=0,
                deleted=None,
                versions=[*versions, version][-keep:],
            )
            writes[oid] = new
            after.append(partial(self.state.put_synced, self._synced(path, oid, new, st, chunked)))
            report.changed.append(f"uploaded {path}")

    def _read(self, path: str, offset: int, length: int) -> bytes | None:
        try:
            with open(self.folder / path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError:
            return None
        return data if len(data) == length else None

    # --- downloads -------------------------------------------------------------------------------

    async def _download_all(
        self,
        downloads: list[tuple[str, str, Entry]],
        synced: dict[str, Synced],
        local: dict[str, Stat],
        report: Report,
    ) -> None:
        # Chunks we already hold in unchanged local files are copied, not fetched.
        have: dict[bytes, tuple[str, int]] = {}
        for p, s in synced.items():
            if s.kind == "file" and _matches(s, local.get(p)):
                offset = 0
                for c in s.chunks:
                    ref = ChunkRef.from_json(c)
                    have.setdefault(ref.mac, (p, offset))
                    offset += ref.length
        total = sum(e.current.size for _, _, e in downloads if e.current)
        meter = Progress(total, label="download", quiet=not self.progress)
        ok = False
        try:
            for path, oid, entry in downloads:
                await self._download(path, oid, entry, have, report, meter)
            ok = True
        finally:
            meter.close(ok)

    async def _download(
        self,
        path: str,
        oid: str,
        entry: Entry,
        have: dict[bytes, tuple[str, int]],
        report: Report,
        meter: Progress,
    ) -> None:
        version = entry.current
        assert version is not None
        tmp_dir = self.state.dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        part = tmp_dir / f"{oid}.bitcache-part"
        refs = version.refs()
        offsets = [sum(r.length for r in refs[:i]) for i in range(len(refs))]
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, version.size)
            sem = asyncio.Semaphore(8)

            async def one(ref: ChunkRef, offset: int) -> None:
                async with sem:
                    data = None
                    if ref.mac in have:
                        src, at = have[ref.mac]
                        data = await asyncio.to_thread(self._read, src, at, ref.length)
                        if data is not None and chunk_mac(self.vault.keys, data) != ref.mac:
                            data = None
                    if data is None:
                        data = await self.vault.fetch_chunk(ref)
                        report.fetched_chunks += 1
                    await asyncio.to_thread(os.pwrite, fd, data, offset)
                    report.downloaded_bytes += ref.length
                    meter.update(ref.length)

            await _run_all([one(r, o) for r, o in zip(refs, offsets, strict=True)])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(part, ns=(version.mtime_ns, version.mtime_ns))
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        st = self._stat(path)
        self.state.put_synced(self._synced(path, oid, entry, st))
        report.changed.append(f"downloaded {path}")

    # --- helpers ---------------------------------------------------------------------------------

    def _stat(self, path: str) -> Stat:
        st = os.stat(self.folder / path, follow_symlinks=False)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        return Stat(kind, st.st_size, st.st_mtime_ns, st.st_ino)

    def _move(self, src: str, dst: str) -> None:
        target = self.folder / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.folder / src, target)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / path)

    def _synced(
        self, path: str, oid: str, entry: Entry, st: Stat, chunked: Chunked | None = None
    ) -> Synced:
        version = entry.current
        chunks = (
            [r.to_json() for r in chunked.refs]
            if chunked is not None
            else (version.chunks if version else [])
        )
        return Synced(
            path,
            oid,
            entry.kind,
            version.n if version else 0,
            st.size,
            st.mtime_ns,
            st.inode,
            json.dumps(chunks),
        )

    def _synced_from(self, s: Synced, st: Stat) -> Synced:
        return Synced(s.path, s.oid, s.kind, s.n, st.size, st.mtime_ns, st.inode, s.chunks_json)

    def _relink(self, s: Synced, path: str, st: Stat) -> After:
        def apply() -> None:
            self.state.drop_synced(s.path)
            self.state.put_synced(
                Synced(path, s.oid, s.kind, s.n, st.size, st.mtime_ns, st.inode, s.chunks_json)
            )

        return apply
