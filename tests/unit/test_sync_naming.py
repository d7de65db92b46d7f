"""Conflict-copy names follow Syncthing's pattern and never lose the extension."""

from __future__ import annotations

from client.sync.naming import clean_device, conflict_name, is_conflict_copy

WHEN = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def test_conflict_names() -> None:
    assert conflict_name("a/report.txt", "laptop", WHEN) == (
        "a/report.sync-conflict-20260101-000000-laptop.txt"
    )
    assert conflict_name("Makefile", "pc", WHEN) == "Makefile.sync-conflict-20260101-000000-pc"
    assert conflict_name(".bashrc", "pc", WHEN) == ".bashrc.sync-conflict-20260101-000000-pc"
    assert conflict_name("x.tar.gz", "my pc/1", WHEN).endswith("-my-pc-1.gz")
    assert is_conflict_copy(conflict_name("a/b.txt", "d", WHEN))
    assert not is_conflict_copy("a/b.txt")
    assert clean_device("../..") == "device"
