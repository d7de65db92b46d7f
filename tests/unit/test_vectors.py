"""docs/test-vectors.json must match the code and must open as documented."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import blake3
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from storage.capability import ShareLink
from storage.crypto import FileDecryptor, FileHeader, derive_keys, hkdf_sha256
from storage.manifest import Manifest, open_manifest
from storage.vectors import make_vectors, vector_plaintext

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "test-vectors.json"


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return result


def test_file_matches_generator(stored: dict[str, Any]) -> None:
    assert stored == make_vectors(), "run `python -m storage.vectors` and review the diff"


def test_covers_required_cases(stored: dict[str, Any]) -> None:
    assert stored["readable_versions"] == [1, 2]
    for version in (1, 2):
        files = [f for f in stored["files"] if f["version"] == version]
        assert [f["header"]["version"] for f in files] == [version, version]
        assert 0 in [f["plaintext_size"] for f in files]
        main = files[0]
        assert main["plaintext_size"] == main["chunk_size"] * 5 // 2
        assert [c["last"] for c in main["chunks"]] == [False, False, True]


def test_v1_vectors_are_the_published_ones(stored: dict[str, Any]) -> None:
    """Format v1 stays readable: its vectors must never change (only v2 was added)."""
    v1 = "".join(c["sealed_hex"] for f in stored["files"] if f["version"] == 1 for c in f["chunks"])
    assert hashlib.sha256(v1.encode()).hexdigest() == (
        "3834007227d18e6302989670deee20bf37bf1344da50d4250770b754c181b6ec"
    )


def test_hkdf_vector(stored: dict[str, Any]) -> None:
    v = stored["hkdf_sha256_rfc5869_case1"]
    # Independent constant from RFC 5869 A.1.
    assert v["okm_hex"] == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    okm = hkdf_sha256(
        bytes.fromhex(v["ikm_hex"]), bytes.fromhex(v["salt_hex"]), bytes.fromhex(v["info_hex"]), 42
    )
    assert okm.hex() == v["okm_hex"]


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_stored_chunks_open_to_stored_plaintext(stored: dict[str, Any], which: int) -> None:
    f = stored["files"][which]
    key, fid = bytes.fromhex(f["key_hex"]), bytes.fromhex(f["file_id_hex"])
    header = FileHeader.from_json_dict(f["header"])
    assert header.file_id == fid
    keys = derive_keys(key, fid)
    assert keys.commitment.hex() == f["subkeys"]["commitment_hex"]
    assert keys.chunk_key.hex() == f["subkeys"]["chunk_key_hex"]
    dec = FileDecryptor(key, header)
    assert dec.chunk_count == len(f["chunks"])
    opened = b""
    for c in f["chunks"]:
        sealed = bytes.fromhex(c["sealed_hex"])
        plaintext = bytes.fromhex(c["plaintext_hex"])
        assert dec.open(c["index"], sealed) == plaintext
        opened += plaintext
    assert opened == vector_plaintext(f["plaintext_size"])


def test_chunks_follow_spec_independently(stored: dict[str, Any]) -> None:
    """Re-derive nonce and plaintext with raw primitives, not with storage.crypto."""
    for f in stored["files"]:
        fid = bytes.fromhex(f["file_id_hex"])
        nonce_key = bytes.fromhex(f["subkeys"]["nonce_key_hex"])
        chunk_key = bytes.fromhex(f["subkeys"]["chunk_key_hex"])
        key = bytes.fromhex(f["key_hex"])
        info = f"bitcache/v{f['version']}/nonce-key".encode()
        assert hkdf_sha256(key, fid, info).hex() == f["subkeys"]["nonce_key_hex"]
        for c in f["chunks"]:
            ad = b"bitcache/v1/chunk" + fid + c["index"].to_bytes(8, "big") + bytes([c["last"]])
            assert ad.hex() == c["associated_data_hex"]
            plaintext = bytes.fromhex(c["plaintext_hex"])
            if f["version"] == 1:
                nonce = hashlib.blake2b(ad + plaintext, digest_size=24, key=nonce_key).digest()
            else:
                nonce = blake3.blake3(ad + plaintext, key=nonce_key).digest(length=24)
            assert nonce.hex() == c["nonce_hex"]
            sealed = bytes.fromhex(c["sealed_hex"])
            assert sealed[:24] == nonce
            assert crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[24:], ad, nonce, chunk_key
            ) == (plaintext)


def test_stored_manifest_opens(stored: dict[str, Any]) -> None:
    v = stored["manifest"]
    key, fid = bytes.fromhex(v["key_hex"]), bytes.fromhex(v["file_id_hex"])
    manifest = open_manifest(derive_keys(key, fid), fid, bytes.fromhex(v["sealed_hex"]))
    assert manifest == Manifest(**v["manifest"])
    assert bytes.fromhex(v["plaintext_hex"]) == json.dumps(
        v["manifest"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_stored_share_link_parses(stored: dict[str, Any]) -> None:
    v = stored["share_link"]
    link = ShareLink.parse(v["url"])
    assert link.gateway == v["gateway"]
    assert link.file_id.hex() == v["file_id_hex"]
    assert link.key.hex() == v["key_hex"]
