"""Content-defined chunking of a file, with the vault's seed, and each chunk's MAC."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyfastcdc import FastCDC

from storage.vault import CDC_AVG_SIZE, CDC_MAX_SIZE, CDC_MIN_SIZE, ChunkRef, VaultKeys, chunk_mac


@dataclass(frozen=True)
class Chunked:
    size: int
    refs: list[ChunkRef]


def make_chunker(keys: VaultKeys) -> FastCDC:
    return FastCDC(
        CDC_AVG_SIZE,
        min_size=CDC_MIN_SIZE,
        max_size=CDC_MAX_SIZE,
        normalized_chunking=1,
        seed=keys.cdc_seed,
    )


def chunk_file(keys: VaultKeys, chunker: FastCDC, path: str) -> Chunked:
    """Cut ``path`` (mmap) and MAC every chunk; an empty file has no chunks."""
    size = os.path.getsize(path)
    if size == 0:
        return Chunked(0, [])
    refs = [ChunkRef(chunk_mac(keys, c.data), c.length) for c in chunker.cut_file(path)]
    return Chunked(sum(r.length for r in refs), refs)
