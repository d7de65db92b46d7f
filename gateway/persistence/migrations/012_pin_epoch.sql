-- How many times the unpinner has forgotten an unpinned CID (gateway/persistence/pins.py):
-- a chunk PUT reads it before adding its bytes and again when it commits, and re-pins only
-- if it moved, instead of re-pinning every new chunk. One row; plain types for both engines.
CREATE TABLE pin_epoch (
    id INTEGER PRIMARY KEY,
    n  BIGINT NOT NULL
);
INSERT INTO pin_epoch (id, n) VALUES (1, 0);
