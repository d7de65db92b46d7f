-- Several gateway processes on one database: exactly one follows each Lightning node's
-- invoice stream, the one holding the node's lease (gateway/persistence/leases.py). A
-- holder renews its row well before expires_at_ms; once that has passed (the holder died),
-- any process may take the row over. Plain types, so SQLite and PostgreSQL both take it.
CREATE TABLE stream_leases (
    node          TEXT PRIMARY KEY,   -- the watcher's key for the node (its REST URL)
    holder        TEXT NOT NULL,      -- which process: host, pid and a random suffix
    expires_at_ms BIGINT NOT NULL     -- Unix time in milliseconds
);
