"""Which chunks a purchase covers and what it costs (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkRange:
    first: int
    last: int  # inclusive

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def purchase_range(index: int, requested: int, chunk_count: int, max_chunks: int) -> ChunkRange:
    """The range a challenge for `index` sells: `requested` chunks, clipped to the file's
    end and the gateway's maximum; never empty."""
    if not 0 <= index < chunk_count:
        raise ValueError(f"chunk {index} outside 0..{chunk_count - 1}")
    count = max(1, min(requested, max_chunks, chunk_count - index))
    return ChunkRange(index, index + count - 1)


def price_msat(per_chunk_msat: int, chunks: ChunkRange) -> int:
    return per_chunk_msat * chunks.count
