"""Tests for storage.folder_link: folder links and the folder manifest (docs/format.md §16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.crypto import FileDecryptor, FileHeader, derive_keys
from storage.errors import FormatError
from storage.folder_link import (
    FolderFile,
    FolderLink,
    FolderManifest,
    is_folder_link,
)
from storage.folder_vectors import make_vectors
from storage.manifest import manifest_to_json, open_manifest
from storage.vault import unpad

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "folder-link-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_vectors_file_is_up_to_date() -> None:
    # Regenerate with `python -m storage.folder_vectors` if the format changes on purpose.
    assert make_vectors() == VECTORS


def test_link_round_trip_and_exact_form() -> None:
    v = VECTORS["link"]
    link = FolderLink(v["gateway"], bytes.fromhex(v["file_id_hex"]), bytes.fromhex(v["key_hex"]))
    assert link.to_url() == v["url"]
    assert FolderLink.parse(v["url"]) == link
    assert FolderLink.parse("  " + v["url"] + "\n") == link
    assert "#v1." in v["url"] and "/d/" in v["url"]
    assert link.manifest_link().file_id == link.file_id
    assert is_folder_link(v["url"])
    assert not is_folder_link(link.manifest_link().to_url())


@pytest.mark.parametrize("url", VECTORS["bad_links"])
def test_bad_links_are_refused(url: str) -> None:
    with pytest.raises(FormatError):
        FolderLink.parse(url)


def test_error_does_not_echo_the_key() -> None:
    url = VECTORS["link"]["url"]
    with pytest.raises(FormatError) as info:
        FolderLink.parse(url.replace("/d/", "/d/x"))
    assert url.split(".")[-1] not in str(info.value)


def test_manifest_canonical_bytes_and_padding() -> None:
    v = VECTORS["manifest"]
    files = tuple(_file(f) for f in v["files"])
    m = FolderManifest(v["name"], files)
    assert m.to_json_bytes().decode() == v["json"]
    plaintext = m.to_plaintext()
    assert plaintext.hex() == v["plaintext_hex"]
    assert len(plaintext) >= 1024 and unpad(plaintext) == v["json"].encode()
    back = FolderManifest.from_plaintext(plaintext)
    assert sorted(back.files, key=lambda f: f.path) == sorted(files, key=lambda f: f.path)
    assert back.total_size == 1_234_567 + 10240


def _file(f: dict[str, object]) -> FolderFile:
    return FolderManifest.from_json_bytes(
        json.dumps({"version": 1, "name": "n", "files": [f]}).encode()
    ).files[0]


def test_manifest_file_opens_with_the_link_key() -> None:
    v = VECTORS
    key = bytes.fromhex(v["link"]["key_hex"])
    fid = bytes.fromhex(v["link"]["file_id_hex"])
    header = FileHeader.from_json_dict(v["file"]["header"])
    dec = FileDecryptor(key, header)
    plaintext = b"".join(
        dec.open(i, bytes.fromhex(c)) for i, c in enumerate(v["file"]["chunks_hex"])
    )
    assert plaintext.hex() == v["manifest"]["plaintext_hex"]
    sealed = bytes.fromhex(v["file"]["sealed_manifest_hex"])
    manifest = open_manifest(derive_keys(key, fid, header.version), fid, sealed)
    assert manifest_to_json(manifest).decode() == v["file"]["manifest_json"]
    assert manifest.media_type == "application/vnd.bitcache.folder+json"


@pytest.mark.parametrize("case", VECTORS["bad_manifests"], ids=lambda c: c["why"])
def test_hostile_manifests_are_refused(case: dict[str, str]) -> None:
    with pytest.raises(FormatError):
        FolderManifest.from_json_bytes(case["json"].encode())


def test_hostile_path_error_is_printable() -> None:
    case = next(c for c in VECTORS["bad_manifests"] if c["why"] == "control character")
    with pytest.raises(FormatError) as info:
        FolderManifest.from_json_bytes(case["json"].encode())
    assert "\n" not in str(info.value)


def test_writer_refuses_bad_paths_too() -> None:
    with pytest.raises(FormatError):
        FolderManifest("ok", (FolderFile("../x", 1, bytes(16), bytes(32)),))
    with pytest.raises(FormatError):
        FolderManifest("a/b", ())


def test_bad_padding_and_not_json_are_format_errors() -> None:
    with pytest.raises(FormatError):
        FolderManifest.from_plaintext(b"{}" + bytes(10))
    with pytest.raises(FormatError):
        FolderManifest.from_plaintext(b"\xff\xfe\x80")
    with pytest.raises(FormatError):
        FolderManifest.from_json_bytes(b"[1, 2]")


def test_empty_folder_is_allowed() -> None:
    m = FolderManifest("empty", ())
    assert FolderManifest.from_plaintext(m.to_plaintext()) == m
