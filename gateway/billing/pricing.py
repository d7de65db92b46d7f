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


# The largest invoice LND (0.21) creates: 100 000 BTC ("invoice amount … is too large,
# max is 100000 BTC"; it compares whole satoshis). Prices and range sizes are validated far
# below it today (at most 100 000 sat times 100 000 chunks = 100 BTC), so this is the
# guarantee that a challenge can always be invoiced, whatever those limits become.
MAX_INVOICE_MSAT = 100_000 * 100_000_000_000


def purchase_range(
    index: int,
    requested: int,
    chunk_count: int,
    max_chunks: int,
    per_chunk_msat: int = 0,
    max_invoice_msat: int = MAX_INVOICE_MSAT,
) -> ChunkRange:
    """The range a challenge for `index` sells: `requested` chunks, clipped to the file's
    end, the gateway's maximum and what one invoice can ask for; never empty."""
    if not 0 <= index < chunk_count:
        raise ValueError(f"chunk {index} outside 0..{chunk_count - 1}")
    affordable = max_invoice_msat // per_chunk_msat if per_chunk_msat > 0 else max_chunks
    count = max(1, min(requested, max_chunks, affordable, chunk_count - index))
    return ChunkRange(index, index + count - 1)


def price_msat(per_chunk_msat: int, chunks: ChunkRange) -> int:
    return per_chunk_msat * chunks.count
