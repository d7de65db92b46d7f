"""gateway.pricing: what a challenge sells and what it costs."""

from __future__ import annotations

import pytest

from gateway.pricing import MAX_INVOICE_MSAT, ChunkRange, price_msat, purchase_range


def test_range_is_clipped_to_the_file_the_maximum_and_one_invoice() -> None:
    assert purchase_range(2, 50, 4, 1024) == ChunkRange(2, 3)
    assert purchase_range(0, 50, 100, 8) == ChunkRange(0, 7)
    assert purchase_range(0, 0, 100, 8) == ChunkRange(0, 0)
    # 100 000 sat a chunk: 42 chunks fit under LND's largest invoice, 43 do not.
    clipped = purchase_range(0, 1024, 2000, 1024, per_chunk_msat=100_000_000)
    assert clipped.count == 42
    assert price_msat(100_000_000, clipped) <= MAX_INVOICE_MSAT
    assert price_msat(100_000_000, ChunkRange(0, 42)) > MAX_INVOICE_MSAT
    # Free files and cheap chunks are not affected.
    assert purchase_range(0, 1024, 2000, 1024, per_chunk_msat=0).count == 1024
    assert purchase_range(0, 1024, 2000, 1024, per_chunk_msat=2_000).count == 1024


def test_index_outside_the_file_is_refused() -> None:
    with pytest.raises(ValueError):
        purchase_range(4, 1, 4, 10)
