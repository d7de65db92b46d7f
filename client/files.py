"""Local files: a descriptor shared with worker threads, durable renames, where to save."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from client.errors import ClientError

# Version of the state files this client keeps (upload state, download sidecar).
_STATE_VERSION = 1


# Bytes written between two starts of writeback (start_writeback).
WRITEBACK_BATCH = 32 << 20
_NOTHING = 1 << 62  # an empty span's start


class _SharedFd:
    """A file descriptor used from worker threads; closing it waits for their I/O.

    Without that wait a cancelled worker thread could write to a closed descriptor number
    that the process has since reused for another file. The I/O calls themselves run side
    by side: a once-a-second fsync of a download must not hold up the chunks being written
    meanwhile (it took 100-170 ms of a 1.2 s, 256 MiB download when it did).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._users = 0
        self._noted = 0  # bytes written since the last writeback started
        self._unflushed = (_NOTHING, 0)  # the span they lie in
        self._idle = threading.Condition()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @contextlib.contextmanager
    def _using(self, closed_error: str | None) -> Iterator[int]:
        """The descriptor, kept open until the block ends; closed already: ClientError
        with ``closed_error``, or -1 when that is None."""
        with self._idle:
            fd = self._fd
            if fd < 0 and closed_error is not None:
                raise ClientError(closed_error)
            self._users += 1
        try:
            yield fd
        finally:
            with self._idle:
                self._users -= 1
                if not self._users:
                    self._idle.notify_all()

    def pwrite_all(self, data: bytes, offset: int) -> None:
        with self._using("the download was abandoned") as fd:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written

    def start_writeback(self, offset: int, length: int) -> None:
        """Notes that these bytes were just written; once ``WRITEBACK_BATCH`` bytes are
        noted, starts writing the span they cover to disk without waiting for it, so the
        fsync that ends a download finds little left to do (it took ~130 ms of a 1.1 s,
        256 MiB download when all was left to it). On Linux, POSIX_FADV_DONTNEED starts
        writeback of the span's dirty pages and drops only pages already clean;
        sync_file_range would say it more plainly but is not in ``os``. In batches, not per
        chunk: a writeback started per 1 MiB chunk slowed the writes it overlapped."""
        if not hasattr(os, "posix_fadvise"):  # macOS: the final fsync does it all
            return
        with self._idle:
            start, end = self._unflushed
            start, end = min(start, offset), max(end, offset + length)
            self._noted += length
            if self._noted < WRITEBACK_BATCH:
                self._unflushed = (start, end)
                return
            self._noted, self._unflushed = 0, (_NOTHING, 0)
        with self._using(None) as fd:
            if fd >= 0:
                os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)

    def pread_exact(self, length: int, offset: int) -> bytes:
        with self._using("file closed") as fd:
            parts: list[bytes] = []
            while length:
                piece = os.pread(fd, length, offset)
                if not piece:
                    raise ClientError("the file got shorter while it was being uploaded")
                parts.append(piece)
                length, offset = length - len(piece), offset + len(piece)
            return b"".join(parts)

    def truncate(self, size: int) -> None:
        with self._using("file closed") as fd:
            os.ftruncate(fd, size)

    def size(self) -> int:
        with self._using("file closed") as fd:
            return os.fstat(fd).st_size

    def fsync(self) -> None:
        with self._using(None) as fd:
            if fd >= 0:
                os.fsync(fd)

    def close(self) -> None:
        with self._idle:
            fd, self._fd = self._fd, -1  # refuses new users at once
            self._idle.wait_for(lambda: self._users == 0)
            if fd >= 0:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not possible on every platform, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
