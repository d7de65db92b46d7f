"""gateway.pricing: what a challenge sells and what it costs."""

from __future__ import annotations

import pytest

from gateway.billing.pricing import MAX_INVOICE_MSAT, ChunkRange, price_msat, purchase_range


def test_range_is_clipped_to_the_file_the_maximum_and_one_invoice() -> None:
    assert purchase_range(2, 50, 4, 1024) == ChunkRange(2, 3)
    assert purchase_range(0, 50, 100, 8) == ChunkRange(0, 7)
    assert purchase_range(0, 0, 100, 8) == ChunkRange(0, 0)
    # An invoice ceiling of 4.2 M sat: 42 chunks of 100 000 sat fit, 43 do not.
    ceiling = 4_294_967_295
    clipped = purchase_range(0, 1024, 2000, 1024, 100_000_000, max_invoice_msat=ceiling)
    assert clipped.count == 42
    assert price_msat(100_000_000, clipped) <= ceiling < price_msat(100_000_000, ChunkRange(0, 42))
    # LND's real ceiling is far above the highest price times the largest range.
    assert price_msat(100_000_000, purchase_range(0, 100_000, 100_000, 100_000, 100_000_000)) < (
        MAX_INVOICE_MSAT
    )
    huge = purchase_range(0, 10**12, 10**12, 10**12, per_chunk_msat=100_000_000)
    assert price_msat(100_000_000, huge) <= MAX_INVOICE_MSAT
    # Free files and cheap chunks are not affected.
    assert purchase_range(0, 1024, 2000, 1024, per_chunk_msat=0).count == 1024
    assert purchase_range(0, 1024, 2000, 1024, per_chunk_msat=2_000).count == 1024


def test_index_outside_the_file_is_refused() -> None:
    with pytest.raises(ValueError):
        purchase_range(4, 1, 4, 10)
