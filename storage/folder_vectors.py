"""Deterministic test vectors for folder links (docs/format.md §16).

Run ``python -m storage.folder_vectors`` to regenerate ``docs/folder-link-vectors.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.crypto import FileEncryptor, b64url_encode, derive_keys
from storage.folder_link import FOLDER_MEDIA_TYPE, FolderFile, FolderLink, FolderManifest
from storage.manifest import Manifest, manifest_to_json, seal_manifest

GATEWAY = "https://gw.example"
FOLDER_KEY = bytes(range(32, 64))
FOLDER_ID = bytes(range(140, 156))
MANIFEST_NONCE = bytes(range(160, 184))
CHUNK_SIZE = 4096
OUTPUT_PATH = Path(__file__).resolve().parent.parent / "docs" / "folder-link-vectors.json"

FILES = (
    FolderFile("Zürich 2026/IMG_0001.jpg", 1_234_567, bytes(range(16)), bytes(range(1, 33))),
    FolderFile("notes.txt", 0, bytes(range(16, 32)), bytes(range(2, 34))),
    FolderFile("a/b/c/deep \u2013 📄.bin", 10240, bytes(range(32, 48)), bytes(range(3, 35))),
)

_OK_FILE = {
    "path": "x",
    "size": 1,
    "file_id": "aaaaaaaaaaaaaaaaaaaaaaaaaa",
    "key": b64url_encode(bytes(32)),
}


def _bad(why: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"version": 1, "name": "shared", "files": [_OK_FILE]}
    if "files" in changes:
        body["files"] = changes.pop("files")
    body.update(changes)
    return {"why": why, "json": json.dumps(body, ensure_ascii=False)}


def _path(why: str, path: str) -> dict[str, Any]:
    return _bad(why, files=[_OK_FILE | {"path": path}])


# Every one of these MUST be refused by a reader, before it writes anything.
BAD_MANIFESTS = [
    _path("parent directory", "../evil"),
    _path("parent directory inside", "a/../../evil"),
    _path("absolute path", "/etc/passwd"),
    _path("NUL byte", "a\u0000b"),
    _path("control character", "a\nb"),
    _path("backslash", "a\\..\\b"),
    _path("dot part", "./a"),
    _path("empty part", "a//b"),
    _path("trailing slash", "a/"),
    _path("empty path", ""),
    _path("part longer than 255 bytes", "x" * 256),
    _path("path longer than 4096 characters", "/".join(["y" * 200] * 21)),
    _bad("same path twice", files=[_OK_FILE, _OK_FILE]),
    _bad("a file inside a file", files=[_OK_FILE, _OK_FILE | {"path": "x/y"}]),
    _bad("negative size", files=[_OK_FILE | {"size": -1}]),
    _bad("size not an integer", files=[_OK_FILE | {"size": 1.5}]),
    _bad("size is a string", files=[_OK_FILE | {"size": "1"}]),
    _bad("unknown file field", files=[_OK_FILE | {"mode": 0o4755}]),
    _bad("short key", files=[_OK_FILE | {"key": "AAAA"}]),
    _bad("bad file id", files=[_OK_FILE | {"file_id": "AAAAAAAAAAAAAAAAAAAAAAAAAA"}]),
    _bad("unknown version", version=2),
    _bad("name is a path", name="a/b"),
    _bad("name is ..", name=".."),
    _bad("unknown field", extra=True),
]

BAD_LINKS = [
    f"{GATEWAY}/d/{FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY).to_url().split('/d/')[1][:26]}",
    FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY).to_url().replace("#v1.", "#v2."),
    FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY).to_url().replace("#v1.", "#"),
    FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY).to_url().replace("/d/", "/f/"),
    FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY).to_url()[:-1],
]


def make_vectors() -> dict[str, Any]:
    folder = FolderManifest(name="Holiday", files=FILES)
    plaintext = folder.to_plaintext()
    enc = FileEncryptor(FOLDER_KEY, FOLDER_ID, len(plaintext), CHUNK_SIZE)
    chunks = [
        enc.seal(i, plaintext[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        for i in range(enc.header.chunk_count)
    ]
    file_manifest = Manifest(
        name="Holiday",
        size=len(plaintext),
        media_type=FOLDER_MEDIA_TYPE,
        chunk_size=CHUNK_SIZE,
        modified=None,
    )
    link = FolderLink(GATEWAY, FOLDER_ID, FOLDER_KEY)
    return {
        "link": {
            "gateway": GATEWAY,
            "file_id_hex": FOLDER_ID.hex(),
            "key_hex": FOLDER_KEY.hex(),
            "url": link.to_url(),
        },
        "manifest": {
            "name": folder.name,
            "files": [f.to_json() for f in FILES],
            "json": folder.to_json_bytes().decode(),
            "plaintext_hex": plaintext.hex(),
        },
        "file": {
            "header": enc.header.to_json_dict(),
            "chunks_hex": [c.hex() for c in chunks],
            "manifest_json": manifest_to_json(file_manifest).decode(),
            "manifest_nonce_hex": MANIFEST_NONCE.hex(),
            "sealed_manifest_hex": seal_manifest(
                derive_keys(FOLDER_KEY, FOLDER_ID, enc.header.version),
                FOLDER_ID,
                file_manifest,
                MANIFEST_NONCE,
            ).hex(),
        },
        "bad_manifests": BAD_MANIFESTS,
        "bad_links": BAD_LINKS,
    }


def main() -> None:
    OUTPUT_PATH.write_text(
        json.dumps(make_vectors(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"wrote {OUTPUT_PATH}")


if __name__ == "__main__":
    main()
