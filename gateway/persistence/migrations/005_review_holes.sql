-- Issue 9 (review holes).

-- Pin reference counts: how many chunk rows use each CID (identical ciphertext shares one
-- CID and one kubo pin). A row at 0 is a CID to unpin; it replaces the unpin queue.
CREATE TABLE pins (
    cid         TEXT PRIMARY KEY,
    refs        INTEGER NOT NULL CHECK (refs >= 0)
) WITHOUT ROWID;
CREATE INDEX pins_unreferenced ON pins(refs) WHERE refs = 0;
INSERT INTO pins (cid, refs) SELECT cid, COUNT(*) FROM chunks GROUP BY cid;
-- Queued unpins of CIDs a live chunk still uses are dropped here (that was the bug).
INSERT OR IGNORE INTO pins (cid, refs) SELECT cid, 0 FROM unpin_queue;
DROP TABLE unpin_queue;
