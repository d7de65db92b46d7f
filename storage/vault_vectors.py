"""Deterministic test vectors for the vault (docs/format.md §14).

Run ``python -m storage.vault_vectors`` to regenerate ``docs/vault-test-vectors.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from storage.crypto import FileEncryptor, b64url_encode, derive_keys
from storage.manifest import Manifest, manifest_to_json, seal_manifest
from storage.vault import (
    CHUNK_FILE_FORMAT_VERSION,
    MIN_MEMLIMIT,
    MIN_OPSLIMIT,
    ChunkRef,
    LinkCode,
    chunk_file,
    chunk_file_plaintext,
    chunk_mac,
    derive_vault_keys,
    log_associated_data,
    object_associated_data,
    padme_length,
    password_kek,
    seal_log,
    seal_object,
    wrap_with_link,
    wrap_with_password,
)
from storage.vault_tree import Entry, Version

MASTER_KEY = bytes(range(32))
ACCOUNT = "acct_0123456789abcdef"
PASSWORD = "correct horse battery staple \u2013 Zürich"  # en dash: non-ASCII on purpose
SALT = bytes(range(16))
WRAP_NONCE = bytes(range(24, 48))
LINK = LinkCode(link_id=bytes(range(60, 68)), secret=bytes(range(70, 86)))
LINK_NONCE = bytes(range(90, 114))
OBJECT_ID = "mrswmz3infvgw3dnnzxxa4lsom"
OBJECT_NONCE = bytes(range(120, 144))
LOG_NONCE = bytes(range(150, 174))
# A deletion log as client/sync/gc.py writes it: one chunk file dropped and not collected yet,
# two collected at change 6.
LOG_BODY = {
    "version": 1,
    "counter": 7,
    "pending": ["mrswmz3infvgw3dnnzxxa4lsoq"],
    "deleted": [[6, ["mrswmz3infvgw3dnnzxxa4lsom", "mrswmz3infvgw3dnnzxxa4lsoo"]]],
    "since": 0,
}
CHUNK = bytes((i * 7 + 3) % 256 for i in range(1000))
OUTPUT_PATH = Path(__file__).resolve().parent.parent / "docs" / "vault-test-vectors.json"


def chunk_manifest(padded_size: int, chunk_size: int) -> Manifest:
    """The fixed manifest of every vault chunk file (nothing about the chunk but its size)."""
    return Manifest(
        name="chunk",
        size=padded_size,
        media_type="application/octet-stream",
        chunk_size=chunk_size,
        modified=None,
    )


def make_vectors() -> dict[str, Any]:
    keys = derive_vault_keys(MASTER_KEY)
    kek = password_kek(PASSWORD, SALT, MIN_OPSLIMIT, MIN_MEMLIMIT)
    wrap = wrap_with_password(
        MASTER_KEY,
        PASSWORD,
        ACCOUNT,
        opslimit=MIN_OPSLIMIT,
        memlimit=MIN_MEMLIMIT,
        salt=SALT,
        nonce=WRAP_NONCE,
    )
    link_wrap = wrap_with_link(MASTER_KEY, LINK, ACCOUNT, nonce=LINK_NONCE)
    mac = chunk_mac(keys, CHUNK)
    cf = chunk_file(keys, mac)
    padded = chunk_file_plaintext(CHUNK)
    enc = FileEncryptor(
        cf.key, cf.file_id, len(padded), max(4096, len(padded)), CHUNK_FILE_FORMAT_VERSION
    )
    manifest = chunk_manifest(len(padded), enc.header.chunk_size)
    entry = Entry(
        kind="file",
        path="Photos/Zürich 2026/IMG_0001.jpg",
        counter=7,
        versions=[
            Version(
                n=1,
                size=len(CHUNK),
                mtime_ns=1_700_000_000_123_456_789,
                time=1_700_000_100,
                device="laptop",
                chunks=[ChunkRef(mac, len(CHUNK)).to_json()],
            )
        ],
    )
    return {
        "master_key_hex": MASTER_KEY.hex(),
        "account": ACCOUNT,
        "subkeys": {
            "tree_key_hex": keys.tree_key.hex(),
            "chunk_mac_key_hex": keys.chunk_mac_key.hex(),
            "chunk_locator_key_hex": keys.chunk_locator_key.hex(),
            "chunk_file_key_hex": keys.chunk_file_key.hex(),
            "cdc_seed": keys.cdc_seed,
            "log_key_hex": keys.log_key.hex(),
        },
        "password_wrap": {
            "password": PASSWORD,
            "prehash_hex": hashlib.blake2b(
                PASSWORD.encode(), digest_size=64, key=b"bitcache/v1/vault/password"
            ).hexdigest(),
            "salt_hex": SALT.hex(),
            "opslimit": MIN_OPSLIMIT,
            "memlimit": MIN_MEMLIMIT,
            "kek_hex": kek.key.hex(),
            "commitment_hex": kek.commitment.hex(),
            "nonce_hex": WRAP_NONCE.hex(),
            "associated_data_hex": (b"bitcache/v1/vault-wrap\x00").hex()
            + json.dumps(wrap.header(), sort_keys=True, separators=(",", ":")).encode().hex(),
            "wrapped": wrap.to_json_dict(),
        },
        "link_wrap": {
            "code": LINK.to_text(),
            "name": LINK.name,
            "nonce_hex": LINK_NONCE.hex(),
            "wrapped": link_wrap.to_json_dict(),
        },
        "padme": [[n, padme_length(n)] for n in (0, 1, 2, 9, 100, 1000, 4097, 1048577)],
        "chunk": {
            "plaintext_hex": CHUNK.hex(),
            "mac_hex": mac.hex(),
            "file_id_hex": cf.file_id.hex(),
            "file_key_hex": cf.key.hex(),
            "padded_size": len(padded),
            "header": enc.header.to_json_dict(),
            "sealed_hex": enc.seal(0, padded).hex(),
            "manifest_json": manifest_to_json(manifest).decode(),
            "manifest_nonce_hex": cf.manifest_nonce().hex(),
            "sealed_manifest": b64url_encode(
                seal_manifest(
                    derive_keys(cf.key, cf.file_id), cf.file_id, manifest, cf.manifest_nonce()
                )
            ),
        },
        "deletion_log": {
            "associated_data_hex": log_associated_data(ACCOUNT).hex(),
            "nonce_hex": LOG_NONCE.hex(),
            "body": LOG_BODY,
            "sealed_hex": seal_log(keys, ACCOUNT, LOG_BODY, LOG_NONCE).hex(),
        },
        "object": {
            "object_id": OBJECT_ID,
            "associated_data_hex": object_associated_data(ACCOUNT, OBJECT_ID).hex(),
            "nonce_hex": OBJECT_NONCE.hex(),
            "body": entry.to_json(),
            "sealed_hex": seal_object(
                keys, ACCOUNT, OBJECT_ID, entry.to_json(), OBJECT_NONCE
            ).hex(),
        },
    }


def main() -> None:
    OUTPUT_PATH.write_text(
        json.dumps(make_vectors(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"wrote {OUTPUT_PATH}")


if __name__ == "__main__":
    main()
