"""Versions and the trash: list what the vault keeps for a path, and bring one back."""

from __future__ import annotations

import time

from client.sync.engine import SyncEngine
from storage.vault_tree import Entry


def entries_at(engine: SyncEngine, path: str) -> list[tuple[str, Entry]]:
    """Objects that are or were at ``path``: the live one first, then the trash, newest first."""
    found = [(oid, e) for oid, e in engine.state.remote().items() if e.path == path]
    return sorted(found, key=lambda item: (item[1].deleted is not None, -(item[1].deleted or 0)))


async def restore(engine: SyncEngine, path: str, version: int | None) -> int:
    """Makes version ``version`` (default: the newest) of ``path`` current again, as a new
    version, out of the trash if need be; returns the new version's number."""
    for _ in range(10):
        await engine.pull()
        candidates = entries_at(engine, path)
        if not candidates:
            raise LookupError(f"the vault has nothing at {path}")
        oid, entry = candidates[0]
        if version is None:
            if entry.deleted is None:
                raise LookupError(f"{path} is not in the trash; name a --version")
            chosen = entry.current
        else:
            chosen = next((v for v in entry.versions if v.n == version), None)
        if chosen is None:
            raise LookupError(f"{path} has no version {version}")
        newest = entry.versions[-1].n if entry.versions else 0
        again = chosen.model_copy(update={"n": newest + 1, "time": int(time.time())})
        versions = [*entry.versions, again][-engine.vault.keep_versions :]
        restored = entry.model_copy(update={"deleted": None, "versions": versions})
        if await engine.commit({oid: restored}):  # a version dropped goes to the GC log
            await engine.pull()
            return again.n
    raise RuntimeError("the vault kept changing; try again")
