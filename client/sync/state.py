"""A synced folder's local state (SQLite in ``<DIR>/.bitcache-sync``): the vault objects as
last seen, what each local path was when last in step with the vault, which chunk files
are known to be on the gateway (so a re-run after a kill sends no finished chunk again), and
the vault's deletion log (whose collected chunk files leave that journal as it is read)."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from client.sync.gc import MAX_PENDING_IDS, DeletionLog, forget
from storage.vault_tree import Entry, Version

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote (
    oid TEXT PRIMARY KEY, counter INTEGER NOT NULL, body TEXT,
    path TEXT, kind TEXT, deleted INTEGER, n INTEGER
);
CREATE TABLE IF NOT EXISTS local (
    path TEXT PRIMARY KEY, oid TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    chunks TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploaded (fid TEXT PRIMARY KEY);
"""


@dataclass(frozen=True)
class Synced:
    """A path as it was when last in step with its vault object."""

    path: str
    oid: str
    kind: str
    n: int  # version number synced (0 for folders)
    size: int
    mtime_ns: int
    inode: int
    chunks_json: str  # JSON text, parsed on first use: a no-change pass never needs it

    @cached_property
    def chunks(self) -> list[list[object]]:
        value: list[list[object]] = json.loads(self.chunks_json)
        return value


class Brief(NamedTuple):
    """What a pass needs to know of most objects, kept in columns beside the body so that
    a pass over an unchanged folder reads no object body at all."""

    path: str
    kind: str
    deleted: int | None
    n: int  # the current version's number (0: a folder, or a file without versions)

    @classmethod
    def of(cls, entry: Entry) -> Brief:
        current = entry.current
        return cls(entry.path, entry.kind, entry.deleted, current.n if current else 0)


class Remote(Mapping[str, Entry]):
    """The vault objects as last seen, by object id: briefs at once, whole objects read
    and built on first use."""

    def __init__(self, briefs: dict[str, Brief], db: sqlite3.Connection) -> None:
        self.briefs = briefs
        self._db = db
        self._entries: dict[str, Entry] = {}

    def __getitem__(self, oid: str) -> Entry:
        entry = self._entries.get(oid)
        if entry is None:
            if oid not in self.briefs:
                raise KeyError(oid)
            row = self._db.execute("SELECT body FROM remote WHERE oid = ?", (oid,)).fetchone()
            entry = self._entries[oid] = _trusted(json.loads(row[0]))
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self.briefs)

    def __len__(self) -> int:
        return len(self.briefs)

    def live(self) -> dict[str, str]:
        """Object id by path, of everything not in the trash."""
        return {b.path: oid for oid, b in self.briefs.items() if b.deleted is None}


class State:
    def __init__(self, folder: Path) -> None:
        self.dir = folder / ".bitcache-sync"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(self.dir / "state.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(remote)")}
        if columns and "path" not in columns:
            # An older layout: the vault copy is only a cache, so drop it and read it again.
            self.db.executescript(
                "DROP TABLE remote;"
                " DELETE FROM meta WHERE key IN ('counter', 'gc_log', 'gc_noticed');"
            )
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def counter(self) -> int:
        return int(self.get("counter") or 0)

    def remote(self) -> Remote:
        rows = self.db.execute(
            "SELECT oid, path, kind, deleted, n, body FROM remote WHERE body IS NOT NULL"
        )
        return Remote({r[0]: Brief(r[1], r[2], r[3], r[4]) for r in rows.fetchall()}, self.db)

    def log(self) -> DeletionLog:
        """The vault's deletion log as last read (empty if it has none)."""
        text = self.get("gc_log")
        return DeletionLog() if text is None else DeletionLog.from_json(json.loads(text))

    def noticed(self) -> builtins.set[str]:  # `set` is a method here
        """Chunk file ids this device saw other writers stop naming (gc.py), to be added to
        the deletion log's pending list by its next collection."""
        return set(json.loads(self.get("gc_noticed") or "[]"))

    def forget_noticed(self) -> None:
        self.db.execute("DELETE FROM meta WHERE key = 'gc_noticed'")

    def apply_remote(
        self,
        counter: int,
        changed: dict[str, Entry | None],
        log: DeletionLog | None = None,
        noticed: builtins.set[str] | None = None,
    ) -> None:
        """Stores what the vault says (None: the object is gone) and the counter, at once.
        A newer deletion log first takes the chunk files it deleted out of the journal, in
        the same transaction: the counter never passes a deletion the journal still holds.
        ``noticed``: chunk file ids the changes stopped naming, kept for the collection."""
        self.db.execute("BEGIN")
        try:
            if noticed:
                kept = sorted(self.noticed() | noticed)[:MAX_PENDING_IDS]
                self.set("gc_noticed", json.dumps(kept))
            if log is not None and log.counter > self.log().counter:
                drop = forget(log, self.counter)
                if drop is None:
                    self.db.execute("DELETE FROM uploaded")
                else:
                    self.db.executemany(
                        "DELETE FROM uploaded WHERE fid = ?", [(fid,) for fid in drop]
                    )
                self.set("gc_log", json.dumps(log.to_json()))
            for oid, entry in changed.items():
                body = None if entry is None else json.dumps(entry.to_json())
                brief = (None,) * 4 if entry is None else Brief.of(entry)
                self.db.execute(
                    "INSERT OR REPLACE INTO remote VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (oid, entry.counter if entry else counter, body, *brief),
                )
            self.set("counter", str(counter))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def synced(self) -> dict[str, Synced]:
        rows = self.db.execute("SELECT * FROM local")
        return {r[0]: Synced(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows}

    def put_synced(self, s: Synced) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO local VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.path, s.oid, s.kind, s.n, s.size, s.mtime_ns, s.inode, s.chunks_json),
        )

    def drop_synced(self, path: str) -> None:
        self.db.execute("DELETE FROM local WHERE path = ?", (path,))

    def is_uploaded(self, fid: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM uploaded WHERE fid = ?", (fid,)).fetchone() is not None
        )

    def mark_uploaded(self, fid: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO uploaded VALUES (?)", (fid,))


def _trusted(body: dict[str, Any]) -> Entry:
    """An object from our own state file, stored only after `Entry.from_json` checked it
    when it came from the vault: built without validating again (that took most of a
    no-change pass over 10 000 files)."""
    versions = [Version.model_construct(**v) for v in body["versions"]]
    return Entry.model_construct(**(body | {"versions": versions}))


def find_folder(path: Path) -> tuple[Path, str]:
    """The synced folder holding ``path`` and the path relative to it (POSIX)."""
    absolute = path.expanduser().absolute()
    for folder in (absolute, *absolute.parents):
        if (folder / ".bitcache-sync").is_dir():
            return folder, absolute.relative_to(folder).as_posix()
    raise FileNotFoundError(f"{path} is not inside a synced folder (run `bitcache sync DIR`)")
