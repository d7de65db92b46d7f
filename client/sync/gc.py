"""The vault's garbage rule and its deletion log (docs/format.md §14.9). Pure: no I/O.

A chunk file is garbage when nothing in the vault names it: no live file, no kept version,
no trash entry. A write that drops versions or objects adds the chunk file ids it dropped
to the log's ``pending`` list in the same compare-and-set; a collection later deletes the
pending ids that nothing names, in one write that also lists them under ``deleted`` at that
change, so every device drops them from its journal of stored chunks before trusting it.
Over-listing in ``pending`` is harmless (a collection checks again); a pending id lost would
only leave a chunk stored, never delete a named one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.vault import ChunkRef
from storage.vault_tree import Entry

# Ids kept in `deleted`; older batches are forgotten, and a device that read the vault last
# before them forgets its whole journal (`since`). 8192 ids are about 240 KB of log.
MAX_DELETED_IDS = 8192
# Ids `pending` may hold (about 480 KB): with `deleted` full the padded log stays under the
# gateway's 1 MiB. A write that would drop more leaves the rest stored (counted, never named).
MAX_PENDING_IDS = 16384
# Chunk files one collection write deletes (the gateway's MAX_GC_FILES).
COLLECT_BATCH = 1000
FILE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")

Locate = Callable[[bytes], str]  # chunk MAC -> chunk file id (storage.vault.chunk_file)


def _check_ids(ids: list[str]) -> list[str]:
    for fid in ids:
        if len(fid) != 26 or not set(fid) <= FILE_ID_CHARS:
            raise ValueError(f"not a file id: {fid[:40]!r}")
    return ids


class DeletionLog(BaseModel):
    """The log's body as sealed (storage.vault.seal_log); validated strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = 1
    counter: int = Field(default=0, ge=0)  # the change it was written at
    pending: list[str] = Field(default_factory=list)  # dropped, not collected yet; sorted
    deleted: list[tuple[int, list[str]]] = Field(
        default_factory=list
    )  # (change, ids), oldest first
    since: int = Field(default=0, ge=0)  # deletions at or before this change are forgotten

    @field_validator("pending")
    @classmethod
    def _pending(cls, ids: list[str]) -> list[str]:
        return _check_ids(ids)

    @field_validator("deleted")
    @classmethod
    def _deleted(cls, batches: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
        for _, ids in batches:
            _check_ids(ids)
        return batches

    @classmethod
    def from_json(cls, value: object) -> DeletionLog:
        if isinstance(value, dict) and isinstance(value.get("deleted"), list):
            # JSON has no tuples: [change, ids] pairs come back as lists.
            value = value | {
                "deleted": [tuple(b) if isinstance(b, list) else b for b in value["deleted"]]
            }
        return cls.model_validate(value)

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def file_ids(entry: Entry, locate: Locate) -> set[str]:
    """The chunk file ids every version of ``entry`` names."""
    return {
        locate(ChunkRef.from_json(chunk).mac)
        for version in entry.versions
        for chunk in version.chunks
    }


def named(entries: Iterable[Entry], locate: Locate) -> set[str]:
    """Every chunk file id the vault names: live objects and trash, all kept versions."""
    out: set[str] = set()
    for entry in entries:
        out |= file_ids(entry, locate)
    return out


def dropped(old: Entry | None, new: Entry | None, locate: Locate) -> set[str]:
    """Chunk file ids the object named before a write and does not after it (versions
    beyond keep_versions, a purged trash entry). Other objects may still name them."""
    if old is None:
        return set()
    return file_ids(old, locate) - (file_ids(new, locate) if new is not None else set())


def with_pending(log: DeletionLog, ids: Iterable[str]) -> tuple[DeletionLog, int]:
    """The log with ``ids`` pending too, and how many of them did not fit (left stored)."""
    old = set(log.pending)
    new = sorted(set(ids) - old)
    room = max(0, MAX_PENDING_IDS - len(old))
    pending = sorted(old | set(new[:room]))
    return log.model_copy(update={"pending": pending}), max(0, len(new) - room)


def collect(
    log: DeletionLog, names: set[str], counter: int, batch: int = COLLECT_BATCH
) -> tuple[list[str], DeletionLog] | None:
    """What a collection writes at change ``counter`` (the vault's next): the pending ids
    nothing names (at most ``batch``) to delete, and the log listing them as deleted, with
    the ids named again taken off ``pending``. None if there is nothing to write."""
    pending = set(log.pending)
    garbage = sorted(pending - names)[:batch]
    rest = sorted(pending - names - set(garbage))
    if not garbage and rest == log.pending:
        return None
    deleted = [*log.deleted, (counter, garbage)] if garbage else list(log.deleted)
    since = log.since
    while sum(len(ids) for _, ids in deleted) > MAX_DELETED_IDS and len(deleted) > 1:
        since = deleted.pop(0)[0]
    return garbage, DeletionLog(counter=counter, pending=rest, deleted=deleted, since=since)


def forget(log: DeletionLog, seen: int) -> set[str] | None:
    """Journal entries a device that had read the vault up to change ``seen`` must drop
    before trusting its journal; None: all of them (deletions it never saw were forgotten)."""
    if seen < log.since:
        return None
    return {fid for change, ids in log.deleted if change > seen for fid in ids}
