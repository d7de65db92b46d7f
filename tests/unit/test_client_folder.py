"""Tests for client.folder's local-disk rules: what `share DIR` lists, and where `get` of a
folder link may write (a hostile manifest is refused in storage.folder_link; this is the
second line: symlinks already in the target folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.errors import ClientError
from client.folder import _already_done, _target, folder_files


def test_share_lists_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("c")
    (tmp_path / "top.txt").write_text("t")
    (tmp_path / ".bitcache-sync").mkdir()
    (tmp_path / ".bitcache-sync" / "state.sqlite").write_text("x")
    (tmp_path / "half.bitcache-part").write_text("x")
    os.symlink("/etc/passwd", tmp_path / "link-to-outside")
    os.symlink(tmp_path / "a", tmp_path / "dir-link")
    assert [rel for rel, _ in folder_files(tmp_path)] == ["a/b/c.txt", "top.txt"]


def test_target_stays_inside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "ok").mkdir(parents=True)
    assert _target(root, "ok/file.txt") == root / "ok" / "file.txt"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "sneaky")
    with pytest.raises(ClientError, match="outside"):
        _target(root, "sneaky/file.txt")
    os.symlink(outside / "x", root / "file-link")
    with pytest.raises(ClientError, match="outside"):
        _target(root, "file-link")
    with pytest.raises(ValueError):
        _target(root, "../escape")


def test_already_done_needs_the_size_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    assert not _already_done(target, 3)
    target.write_bytes(b"abc")
    assert _already_done(target, 3)
    assert not _already_done(target, 4)
    (tmp_path / "f.bin.part").write_bytes(b"")
    assert not _already_done(target, 3)
    (tmp_path / "d").mkdir()
    with pytest.raises(ClientError):
        _already_done(tmp_path / "d", 0)
