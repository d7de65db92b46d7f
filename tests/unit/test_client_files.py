"""client/files.py: the descriptor shared with worker threads. Its I/O runs side by side
(a slow fsync holds up no write), and closing it waits for I/O already under way."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import files
from client.errors import ClientError


class SlowFsync:
    """os.fsync that blocks until released, telling when it has started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released fsync"


@pytest.fixture
def shared(tmp_path: Path) -> files._SharedFd:
    return files._SharedFd(os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT, 0o600))


@pytest.fixture
def syncing(
    shared: files._SharedFd, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SlowFsync, threading.Thread]]:
    """An fsync of ``shared`` under way in a worker thread, held until released."""
    slow = SlowFsync()
    monkeypatch.setattr(os, "fsync", slow)
    thread = threading.Thread(target=shared.fsync)
    thread.start()
    assert slow.started.wait(10)
    yield slow, thread
    slow.release.set()
    thread.join(5)


def test_a_write_goes_ahead_while_an_fsync_is_under_way(
    shared: files._SharedFd, syncing: tuple[SlowFsync, threading.Thread], tmp_path: Path
) -> None:
    slow, syncer = syncing
    writing = threading.Thread(target=shared.pwrite_all, args=(b"chunk", 3))
    writing.start()
    writing.join(5)
    done_during_fsync = not writing.is_alive()
    slow.release.set()
    syncer.join(5)
    assert done_during_fsync, "the write waited for the fsync"
    shared.start_writeback(3, 5)  # a hint to the kernel: the bytes stay as written
    shared.close()
    shared.start_writeback(3, 5)  # closed: nothing to do, and no error
    assert (tmp_path / "f.part").read_bytes() == b"\0\0\0chunk"


def test_closing_waits_for_io_under_way_and_then_refuses_more(
    shared: files._SharedFd, syncing: tuple[SlowFsync, threading.Thread]
) -> None:
    slow, syncer = syncing
    closing = threading.Thread(target=shared.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive(), "close did not wait for the fsync under way"
    assert shared.closed  # new I/O is refused from the moment close begins
    with pytest.raises(ClientError, match="abandoned"):
        shared.pwrite_all(b"late", 0)
    slow.release.set()
    closing.join(5)
    syncer.join(5)
    assert not closing.is_alive() and not syncer.is_alive()
    shared.fsync()  # after close: nothing to make durable, and no error


def test_writeback_starts_once_a_batch_is_written_over_the_span_it_covers(
    shared: files._SharedFd, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, advice: calls.append((o, n, advice)))
    monkeypatch.setattr(files, "WRITEBACK_BATCH", 10)
    shared.start_writeback(20, 4)  # chunks finish out of order
    shared.start_writeback(8, 4)
    assert calls == []  # 8 bytes noted: not yet a batch
    shared.start_writeback(30, 4)
    assert calls == [(8, 26, os.POSIX_FADV_DONTNEED)]  # bytes 8..33, the span of all three
    shared.start_writeback(40, 4)
    assert len(calls) == 1  # counting starts again
    shared.close()
