"""bench/crypto.py: the results file is merged, never clobbered, and the timing helper works."""

from __future__ import annotations

import json
from pathlib import Path

from bench.crypto import best_mibs, merge_results

FIGURE = {"value": 2.0, "baseline": 1.0, "ratio": 2.0, "unit": "MiB/s"}


def test_merge_keeps_other_benches_figures(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"paid_vs_kubo": {"ratio": 0.5}, "open_vs_aead": {"ratio": 0.1}}))
    merge_results(path, {"open_vs_aead": FIGURE, "seal_vs_aead": FIGURE})
    assert json.loads(path.read_text()) == {
        "paid_vs_kubo": {"ratio": 0.5},
        "open_vs_aead": FIGURE,
        "seal_vs_aead": FIGURE,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left


def test_merge_starts_afresh_from_a_missing_or_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    merge_results(path, {"open_vs_aead": FIGURE})
    assert json.loads(path.read_text()) == {"open_vs_aead": FIGURE}
    for broken in ("{not json", "[1, 2]"):
        path.write_text(broken)
        merge_results(path, {"seal_vs_aead": FIGURE})
        assert json.loads(path.read_text()) == {"seal_vs_aead": FIGURE}


def test_best_mibs_keeps_the_best_turn_of_each_case() -> None:
    calls: list[str] = []
    result = best_mibs({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 2)
    assert calls == ["a", "a", "b", "b"] * 3  # in turns, so load hits every case alike
    assert set(result) == {"a", "b"} and all(v > 0 for v in result.values())
