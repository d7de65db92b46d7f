"""Pin reference counts per CID, kept inside the caller's database transaction.

Chunks are content-addressed, so two files (of any accounts) that hold the same ciphertext
share one CID and one kubo pin. kubo keeps a single recursive pin per CID and does not
count, so the gateway counts: `pins.refs` is the number of chunk rows that use the CID,
changed in the same transaction as those rows. A row at zero is a CID to unpin; the
unpinner removes it only if it is still at zero once kubo has unpinned it.

Protocol (why no CID is ever left unpinned while referenced, without a lock across kubo):
- a PUT reads the pin epoch (`epoch()`), adds (and so pins) the bytes, then takes a
  reference; when its reference is the first (`reference()` returns 1) and the epoch has
  moved since (read after the reference, in the same transaction), it pins again after
  committing, because an unpinner may have unpinned the CID between the add and the commit;
- the unpinner unpins a zero row, then in a transaction deletes it if still zero and moves
  the epoch; if a reference appeared meanwhile it pins again.
Either the unpinner's delete commits before the PUT reads the epoch in its transaction (the
PUT sees the epoch moved and re-pins after the unpin), or it does not delete (it sees the
reference, or waits on the row the PUT's reference locked, and re-pins). So the usual new
chunk, with no unpin anywhere meanwhile, costs kubo one add, not an add and a pin.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.persistence.database import Connection


async def reference(conn: Connection, cid: str) -> int:
    """One more chunk row uses `cid`; returns the new count."""
    async with conn.execute(
        "INSERT INTO pins (cid, refs) VALUES (?, 1)"
        " ON CONFLICT (cid) DO UPDATE SET refs = pins.refs + 1 RETURNING refs",
        (cid,),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def unreference(conn: Connection, cids: Iterable[str]) -> None:
    """Chunk rows using these CIDs (one entry per row) are gone; a CID at zero is
    left for the unpinner."""
    # In CID order: two deletes sharing CIDs then lock the rows in the same order (no
    # deadlock on PostgreSQL).
    await conn.executemany(
        "UPDATE pins SET refs = MAX(refs - 1, 0) WHERE cid = ?", [(cid,) for cid in sorted(cids)]
    )


async def release_unrecorded(conn: Connection, cid: str) -> None:
    """The bytes were added (and so pinned) but no chunk row records them (rejected as a
    conflict, or the file was deleted meanwhile): unpin unless some chunk row uses them."""
    await conn.execute(
        "INSERT INTO pins (cid, refs) VALUES (?, 0) ON CONFLICT(cid) DO NOTHING", (cid,)
    )


async def unreferenced(conn: Connection, limit: int, among: list[str] | None = None) -> list[str]:
    """CIDs no chunk uses (of `among`, when given), for the unpinner."""
    params: list[str | int] = [limit]
    sql = "SELECT cid FROM pins WHERE refs = 0 LIMIT ?"
    if among is not None:
        marks = ",".join("?" * len(among))
        sql = f"SELECT cid FROM pins WHERE refs = 0 AND cid IN ({marks}) LIMIT ?"
        params = [*among, limit]
    async with conn.execute(sql, params) as cur:
        return [str(r[0]) async for r in cur]


async def forget_if_unreferenced(conn: Connection, cid: str) -> bool:
    """After kubo unpinned `cid`: drops its row if still unreferenced. False if a chunk
    row took a reference meanwhile, so the caller must pin it again."""
    cur = await conn.execute("DELETE FROM pins WHERE cid = ? AND refs = 0", (cid,))
    if cur.rowcount:
        await conn.execute("UPDATE pin_epoch SET n = n + 1 WHERE id = 1")
        return True
    async with conn.execute("SELECT refs FROM pins WHERE cid = ?", (cid,)) as found:
        row = await found.fetchone()
    # No row at all: another drain finished this CID; a PUT after that pins by itself.
    return row is None


async def epoch(conn: Connection) -> int:
    """The pin epoch: moves whenever the unpinner forgets a CID it unpinned (see above)."""
    async with conn.execute("SELECT n FROM pin_epoch WHERE id = 1") as cur:
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])
