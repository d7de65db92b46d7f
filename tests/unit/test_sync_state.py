"""The sync state file: vault objects kept with their briefs (what a no-change pass reads)
and built whole only on use, the upload journal, and an older layout read again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from client.sync.state import Brief, State, Synced
from storage.vault_tree import Entry, Version

CHUNK = [["A" * 43, 5]]


def _file(path: str, n: int, deleted: int | None = None) -> Entry:
    versions = [
        Version(n=i, size=5, mtime_ns=i, time=1, device="d", chunks=CHUNK) for i in range(1, n + 1)
    ]
    return Entry(kind="file", path=path, counter=3, deleted=deleted, versions=versions)


def test_remote_keeps_briefs_and_builds_objects_on_use(tmp_path: Path) -> None:
    state = State(tmp_path)
    try:
        state.apply_remote(
            3,
            {
                "o1": _file("a.txt", 2),
                "o2": _file("b.txt", 1, deleted=99),
                "o3": Entry(kind="dir", path="d", counter=3),
            },
        )
        state.apply_remote(4, {"o1": _file("moved.txt", 2), "o3": None})
        remote = state.remote()
        assert state.counter == 4
        assert remote.briefs == {
            "o1": Brief("moved.txt", "file", None, 2),
            "o2": Brief("b.txt", "file", 99, 1),
        }
        assert remote.live() == {"moved.txt": "o1"}
        assert "o3" not in remote and len(remote) == 2
        assert remote["o1"] == _file("moved.txt", 2)  # the same object as validated
        assert remote.get("o3") is None
        assert dict(remote.items())["o2"].deleted == 99
    finally:
        state.close()


def test_synced_chunks_and_the_journal_survive_a_reopen(tmp_path: Path) -> None:
    state = State(tmp_path)
    state.put_synced(Synced("a.txt", "o1", "file", 2, 5, 7, 11, json.dumps(CHUNK)))
    state.mark_uploaded("fid1")
    state.close()
    state = State(tmp_path)
    try:
        [s] = state.synced().values()
        assert (s.path, s.n, s.inode, s.chunks) == ("a.txt", 2, 11, CHUNK)
        assert state.is_uploaded("fid1") and not state.is_uploaded("fid2")
    finally:
        state.close()


def test_an_older_layout_drops_its_copy_of_the_vault(tmp_path: Path) -> None:
    folder = tmp_path / ".bitcache-sync"
    folder.mkdir()
    with sqlite3.connect(folder / "state.sqlite") as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE remote (oid TEXT PRIMARY KEY, counter INTEGER NOT NULL, body TEXT);"
            "INSERT INTO meta VALUES ('counter', '9'), ('device', 'pc');"
            "INSERT INTO remote VALUES ('o1', 9, '{}');"
        )
    state = State(tmp_path)
    try:
        assert state.counter == 0 and not state.remote()  # read again from the vault
        assert state.get("device") == "pc"
    finally:
        state.close()
