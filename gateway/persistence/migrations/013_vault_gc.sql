-- The vault's deletion log (docs/format.md §14.9): sealed by the client, opaque here, written
-- in the same compare-and-set batch as the chunk files its garbage collection deletes; and
-- the change counter it was last written at (a device reads it again when that passes its own).
ALTER TABLE vaults ADD COLUMN gc_log BLOB;
ALTER TABLE vaults ADD COLUMN gc_log_counter INTEGER NOT NULL DEFAULT 0;
