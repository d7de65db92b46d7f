"""The import's progress figures (persistence/legacy_import.Progress): pure arithmetic."""

from __future__ import annotations

import pytest

from gateway.persistence.legacy_import import Counts, Progress


def test_eta_waits_for_the_rows_still_to_merge_after_the_file_is_read() -> None:
    # Half the file read in 10 s, a quarter of its rows stored: storing is the slower part.
    half = Progress(500, 1000, 0, Counts(rows=4_000_000, inserted=2_000_000), 4_000_000, 10.0)
    assert half.counts.settled == 2_000_000
    assert half.settled_per_s == pytest.approx(200_000)
    assert half.eta_s == pytest.approx((8_000_000 - 2_000_000) / 200_000)
    # Read to the end, the last run still merging: not "0 s left".
    read = Progress(1000, 1000, 0, Counts(rows=8_000_000, inserted=6_000_000), 8_000_000, 20.0)
    assert read.eta_s == pytest.approx(2_000_000 / 300_000)
    done = Progress(1000, 1000, 0, Counts(rows=8_000_000, inserted=7_999_990, rejected=10), 8, 25.0)
    assert done.eta_s == 0


def test_before_any_row_is_stored_the_eta_is_the_readings_and_a_resume_counts_its_own() -> None:
    first_run = Progress(250, 1000, 0, Counts(rows=1_000_000), 1_000_000, 5.0)
    assert first_run.eta_s == pytest.approx(15.0)  # 750 bytes at 50 bytes/s
    assert Progress(0, 1000, 0, Counts(), 0, 0.0).eta_s is None
    # Resumed at byte 600 with 3 M rows stored before: only this run's work sets the rates.
    resumed = Progress(800, 1000, 600, Counts(rows=4_000_000, present=3_500_000), 1_000_000, 10.0,
                       settled_at_start=3_000_000)  # fmt: skip
    assert resumed.settled_per_s == pytest.approx(50_000)
    assert resumed.eta_s == pytest.approx((5_000_000 - 3_500_000) / 50_000)
