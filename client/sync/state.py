"""A synced folder's local state (SQLite in ``<DIR>/.bitcache-sync``): the vault objects as
last seen, what each local path was when last in step with the vault, and which chunk files
are known to be on the gateway (so a re-run after a kill sends no finished chunk again)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.vault_tree import Entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote (oid TEXT PRIMARY KEY, counter INTEGER NOT NULL, body TEXT);
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
    chunks: list[list[object]]


class State:
    def __init__(self, folder: Path) -> None:
        self.dir = folder / ".bitcache-sync"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(self.dir / "state.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
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

    def remote(self) -> dict[str, Entry]:
        rows = self.db.execute("SELECT oid, body FROM remote WHERE body IS NOT NULL")
        return {oid: Entry.from_json(json.loads(body)) for oid, body in rows}

    def apply_remote(self, counter: int, changed: dict[str, Entry | None]) -> None:
        """Stores what the vault says (None: the object is gone) and the counter, at once."""
        self.db.execute("BEGIN")
        try:
            for oid, entry in changed.items():
                body = None if entry is None else json.dumps(entry.to_json())
                self.db.execute(
                    "INSERT INTO remote VALUES (?, ?, ?) ON CONFLICT(oid) DO UPDATE"
                    " SET counter = excluded.counter, body = excluded.body",
                    (oid, entry.counter if entry else counter, body),
                )
            self.set("counter", str(counter))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def synced(self) -> dict[str, Synced]:
        rows = self.db.execute("SELECT * FROM local")
        return {
            r[0]: Synced(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7])) for r in rows
        }

    def put_synced(self, s: Synced) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO local VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.path, s.oid, s.kind, s.n, s.size, s.mtime_ns, s.inode, json.dumps(s.chunks)),
        )

    def drop_synced(self, path: str) -> None:
        self.db.execute("DELETE FROM local WHERE path = ?", (path,))

    def is_uploaded(self, fid: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM uploaded WHERE fid = ?", (fid,)).fetchone() is not None
        )

    def mark_uploaded(self, fid: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO uploaded VALUES (?)", (fid,))


def find_folder(path: Path) -> tuple[Path, str]:
    """The synced folder holding ``path`` and the path relative to it (POSIX)."""
    absolute = path.expanduser().absolute()
    for folder in (absolute, *absolute.parents):
        if (folder / ".bitcache-sync").is_dir():
            return folder, absolute.relative_to(folder).as_posix()
    raise FileNotFoundError(f"{path} is not inside a synced folder (run `bitcache sync DIR`)")
