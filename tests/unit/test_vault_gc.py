"""The vault's garbage rule and deletion log (client/sync/gc.py), and how the local state
applies a log to its journal of stored chunks (client/sync/state.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.sync import gc
from client.sync.state import State
from storage.crypto import b64url_encode
from storage.vault import chunk_file, derive_vault_keys
from storage.vault_tree import Entry, Version

KEYS = derive_vault_keys(bytes(range(32)))


def mac(n: int) -> bytes:
    return bytes([n]) * 32


def fid(n: int) -> str:
    return chunk_file(KEYS, mac(n)).file_id_text


def locate(m: bytes) -> str:
    return chunk_file(KEYS, m).file_id_text


def version(n: int, *chunks: int) -> Version:
    refs = [[b64url_encode(mac(c)), 1000 + c] for c in chunks]
    return Version(
        n=n, size=sum(1000 + c for c in chunks), mtime_ns=0, time=0, device="d", chunks=refs
    )


def file(path: str, *versions: Version, deleted: int | None = None) -> Entry:
    return Entry(kind="file", path=path, counter=1, deleted=deleted, versions=list(versions))


def test_a_chunk_is_garbage_only_if_nothing_names_it() -> None:
    live = file("a", version(1, 1, 2), version(2, 2, 3))  # 1 only in an older kept version
    trash = file("b", version(1, 4), deleted=100)  # in the trash: still named
    folder = Entry(kind="dir", path="d", counter=1)
    names = gc.named([live, trash, folder], locate)
    assert names == {fid(1), fid(2), fid(3), fid(4)}
    log = gc.DeletionLog(pending=sorted({fid(1), fid(4), fid(5), fid(6)}))
    step = gc.collect(log, names, counter=7)
    assert step is not None
    garbage, after = step
    assert set(garbage) == {fid(5), fid(6)}  # named nowhere
    assert after.pending == []  # 1 and 4 are named again: off the list until dropped again
    assert after.deleted == [(7, garbage)] and after.counter == 7
    assert gc.collect(after, names, counter=8) is None  # nothing left to do


def test_dropped_chunks_are_those_the_write_stops_naming() -> None:
    old = file("a", version(1, 1, 2), version(2, 2, 3))
    trimmed = file("a", version(2, 2, 3), version(3, 3, 5))  # keep_versions = 2
    assert gc.dropped(old, trimmed, locate) == {fid(1)}
    assert gc.dropped(old, None, locate) == {fid(1), fid(2), fid(3)}  # purged
    assert gc.dropped(None, trimmed, locate) == set()  # new object
    renamed = old.model_copy(update={"path": "b"})
    assert gc.dropped(old, renamed, locate) == set()
    log, overflow = gc.with_pending(gc.DeletionLog(pending=[fid(9)]), {fid(1), fid(9)})
    assert (log.pending, overflow) == (sorted({fid(1), fid(9)}), 0)
    small = gc.MAX_PENDING_IDS
    try:
        gc.MAX_PENDING_IDS = 3
        full, overflow = gc.with_pending(log, {fid(n) for n in range(1, 6)})
    finally:
        gc.MAX_PENDING_IDS = small
    assert len(full.pending) == 3 and overflow == 3  # left stored, never deleted


def test_collections_go_in_batches_and_the_log_forgets_old_batches() -> None:
    pending = sorted({fid(n) for n in range(1, 30)})
    log = gc.DeletionLog(pending=pending)
    step = gc.collect(log, set(), counter=3, batch=10)
    assert step is not None
    first, log = step
    assert len(first) == 10 and len(log.pending) == 19 and not set(first) & set(log.pending)
    counter = 3
    while log.pending:
        counter += 1
        step = gc.collect(log, set(), counter, batch=10)
        assert step is not None
        _, log = step
    assert [c for c, _ in log.deleted] == [3, 4, 5]
    # A device that read up to change 4 forgets what change 5 deleted; one before all: all.
    assert gc.forget(log, 4) == set(log.deleted[2][1])
    assert gc.forget(log, 5) == set()
    small = gc.MAX_DELETED_IDS
    try:
        gc.MAX_DELETED_IDS = 15
        step = gc.collect(gc.DeletionLog(pending=pending[:10], deleted=log.deleted[:1]), set(), 9)
        assert step is not None
        _, pruned = step
    finally:
        gc.MAX_DELETED_IDS = small
    assert [c for c, _ in pruned.deleted] == [9] and pruned.since == 3
    assert gc.forget(pruned, 2) is None  # missed a forgotten batch: drop the whole journal
    assert gc.forget(pruned, 3) == set(pruned.deleted[0][1])


def test_the_log_is_strict() -> None:
    good = gc.DeletionLog(counter=2, pending=[fid(1)], deleted=[(2, [fid(2)])], since=0)
    assert gc.DeletionLog.from_json(good.to_json()) == good
    for bad in (
        {"counter": 1, "extra": 1},
        {"counter": -1},
        {"pending": ["not-an-id"]},
        {"deleted": [[1, ["1" * 26]]]},  # 1 is not base32
        {"counter": "1"},
    ):
        with pytest.raises(ValueError):
            gc.DeletionLog.from_json(bad)


def test_the_state_drops_collected_chunks_from_its_journal(tmp_path: Path) -> None:
    state = State(tmp_path)
    try:
        for n in (1, 2, 3):
            state.mark_uploaded(fid(n))
        state.apply_remote(5, {})
        log = gc.DeletionLog(counter=6, deleted=[(2, [fid(3)]), (6, [fid(1)])])
        state.apply_remote(6, {}, log)
        # Change 2 was before this device's 5: already applied then; change 6 is new.
        assert [state.is_uploaded(fid(n)) for n in (1, 2, 3)] == [False, True, True]
        assert state.log() == log
        state.mark_uploaded(fid(1))
        state.apply_remote(7, {}, log)  # the same log again (not newer): nothing dropped
        assert state.is_uploaded(fid(1))
        forgotten = gc.DeletionLog(counter=9, deleted=[(9, [fid(4)])], since=8)
        state.apply_remote(9, {}, forgotten)  # read up to 7, batches up to 8 forgotten
        assert not any(state.is_uploaded(fid(n)) for n in (1, 2, 3))
        assert state.counter == 9
        state.apply_remote(10, {}, None, {fid(5)})
        state.apply_remote(11, {}, None, {fid(6)})
        assert state.noticed() == {fid(5), fid(6)}
        state.forget_noticed()
        assert state.noticed() == set()
    finally:
        state.close()
