"""Local files: a descriptor shared with worker threads, durable renames, where to save."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from client.errors import ClientError

# Version of the state files this client keeps (upload state, download sidecar).
_STATE_VERSION = 1


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
