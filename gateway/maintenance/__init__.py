"""Background loops that are not billing (unpinning deleted files' chunks)."""
