"""The vault's key hierarchy, wraps and tree objects (storage/vault.py, docs/format.md §14)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from storage.crypto import FileDecryptor, FileHeader, b64url_encode, derive_keys
from storage.errors import ChunkAuthError, FormatError
from storage.manifest import open_manifest
from storage.vault import (
    MIN_MEMLIMIT,
    MIN_OPSLIMIT,
    ChunkRef,
    LinkCode,
    VaultAuthError,
    WrappedKey,
    WrongPasswordError,
    chunk_file,
    chunk_file_plaintext,
    chunk_mac,
    derive_vault_keys,
    new_master_key,
    new_object_id,
    open_chunk_plaintext,
    open_log,
    open_object,
    pad,
    padme_length,
    password_kek,
    seal_object,
    unpad,
    unwrap_with_link,
    unwrap_with_password,
    wrap_with_link,
    wrap_with_password,
)
from storage.vault_tree import Entry, Version, check_path
from storage.vault_vectors import make_vectors

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vault-test-vectors.json"
ACCOUNT = "acct_00000000000000aa"
FAST = {"opslimit": MIN_OPSLIMIT, "memlimit": MIN_MEMLIMIT}


@pytest.fixture(scope="module")
def master() -> bytes:
    return new_master_key()


@pytest.fixture(scope="module")
def wrapped(master: bytes) -> WrappedKey:
    return wrap_with_password(master, "hunter2 hunter2", ACCOUNT, **FAST)


def _tamper(wrapped: WrappedKey, **changes: Any) -> WrappedKey:
    return WrappedKey.from_json_dict(wrapped.to_json_dict() | changes)


def test_stored_vectors_match_the_code() -> None:
    stored = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert stored == make_vectors(), "run `python -m storage.vault_vectors` and review the diff"


def test_vectors_open_with_the_primitives_alone() -> None:
    v = make_vectors()
    pw = v["password_wrap"]
    wrap = WrappedKey.from_json_dict(pw["wrapped"])
    ad = bytes.fromhex(pw["associated_data_hex"])
    master = crypto_aead_xchacha20poly1305_ietf_decrypt(
        wrap.ciphertext, ad, wrap.nonce, bytes.fromhex(pw["kek_hex"])
    )
    assert master.hex() == v["master_key_hex"]
    assert unwrap_with_password(wrap, pw["password"], v["account"]).hex() == v["master_key_hex"]
    link = WrappedKey.from_json_dict(v["link_wrap"]["wrapped"])
    code = LinkCode.parse(v["link_wrap"]["code"])
    assert unwrap_with_link(link, code, v["account"]).hex() == v["master_key_hex"]
    c = v["chunk"]
    header = FileHeader.from_json_dict(c["header"])
    padded = FileDecryptor(bytes.fromhex(c["file_key_hex"]), header).open(
        0, bytes.fromhex(c["sealed_hex"])
    )
    keys = derive_vault_keys(bytes.fromhex(v["master_key_hex"]))
    ref = ChunkRef(bytes.fromhex(c["mac_hex"]), len(bytes.fromhex(c["plaintext_hex"])))
    assert open_chunk_plaintext(keys, ref, padded).hex() == c["plaintext_hex"]
    fid = bytes.fromhex(c["file_id_hex"])
    text = c["sealed_manifest"]
    sealed_manifest = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    file_keys = derive_keys(bytes.fromhex(c["file_key_hex"]), fid)
    manifest = open_manifest(file_keys, fid, sealed_manifest)
    assert manifest.size == c["padded_size"]
    o = v["object"]
    body = open_object(keys, v["account"], o["object_id"], bytes.fromhex(o["sealed_hex"]))
    assert body == o["body"]
    log = v["deletion_log"]
    log_key = bytes.fromhex(v["subkeys"]["log_key_hex"])
    assert log_key == keys.log_key
    sealed_log = bytes.fromhex(log["sealed_hex"])
    padded_log = crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed_log[24:], bytes.fromhex(log["associated_data_hex"]), sealed_log[:24], log_key
    )
    assert len(padded_log) % 256 == 0
    assert open_log(keys, v["account"], sealed_log) == log["body"]
    with pytest.raises(VaultAuthError):  # the log key is not the tree key: no swapping roles
        open_object(keys, v["account"], o["object_id"], sealed_log)


def test_password_round_trip_and_wrong_password(master: bytes, wrapped: WrappedKey) -> None:
    again = WrappedKey.from_bytes(wrapped.to_bytes())
    assert unwrap_with_password(again, "hunter2 hunter2", ACCOUNT) == master
    with pytest.raises(WrongPasswordError):
        unwrap_with_password(again, "hunter2 hunter3", ACCOUNT)


def test_every_field_of_the_wrap_is_authenticated(wrapped: WrappedKey) -> None:
    d = wrapped.to_json_dict()
    ct = bytearray(wrapped.ciphertext)
    ct[0] ^= 1
    nonce = bytearray(wrapped.nonce)
    nonce[5] ^= 1
    bad = [
        _tamper(wrapped, ciphertext=b64url_encode(bytes(ct))),
        _tamper(wrapped, nonce=b64url_encode(bytes(nonce))),
    ]
    for candidate in bad:
        with pytest.raises(VaultAuthError):
            unwrap_with_password(candidate, "hunter2 hunter2", ACCOUNT)
    # Lower the cost (a downgrade) or change the salt: a different KEK, refused.
    cheaper = _tamper(wrapped, kdf=d["kdf"] | {"opslimit": MIN_OPSLIMIT + 1})
    with pytest.raises(VaultAuthError):
        unwrap_with_password(cheaper, "hunter2 hunter2", ACCOUNT)


def test_commitment_is_bound_to_the_ciphertext(wrapped: WrappedKey) -> None:
    # A server that swaps in another commitment cannot make the AEAD accept the wrap.
    other = wrap_with_password(new_master_key(), "hunter2 hunter2", ACCOUNT, **FAST)
    mixed = _tamper(wrapped, commitment=b64url_encode(other.commitment))
    with pytest.raises(VaultAuthError):
        unwrap_with_password(mixed, "hunter2 hunter2", ACCOUNT)


def test_wrap_is_bound_to_its_account(wrapped: WrappedKey) -> None:
    with pytest.raises(VaultAuthError):
        unwrap_with_password(wrapped, "hunter2 hunter2", "acct_someone_else")
    moved = _tamper(wrapped, account="acct_someone_else")
    with pytest.raises(VaultAuthError):
        unwrap_with_password(moved, "hunter2 hunter2", "acct_someone_else")


def test_purpose_confusion_is_rejected(master: bytes, wrapped: WrappedKey) -> None:
    code = LinkCode.new()
    link = wrap_with_link(master, code, ACCOUNT)
    assert unwrap_with_link(link, code, ACCOUNT) == master
    with pytest.raises(VaultAuthError):
        unwrap_with_password(link, "hunter2 hunter2", ACCOUNT)
    with pytest.raises(VaultAuthError):
        unwrap_with_link(wrapped, code, ACCOUNT)
    # Relabel a link wrap as a password wrap with a kdf a password would use: refused.
    relabelled = WrappedKey(
        "password", ACCOUNT, dict(wrapped.kdf), link.commitment, link.nonce, link.ciphertext
    )
    with pytest.raises(VaultAuthError):
        unwrap_with_password(relabelled, "hunter2 hunter2", ACCOUNT)
    with pytest.raises(WrongPasswordError):
        unwrap_with_link(link, LinkCode(code.link_id, bytes(16)), ACCOUNT)


def test_kek_differs_from_a_login_proof_over_the_same_password_and_salt() -> None:
    # Whatever salt the gateway hands out for the login proof, argon2id over the bare password
    # never equals the vault's KEK (keyed prehash + HKDF with a purpose).
    salt = bytes(16)
    proof = argon2id.kdf(32, b"pw", salt, opslimit=MIN_OPSLIMIT, memlimit=MIN_MEMLIMIT)
    kek = password_kek("pw", salt, MIN_OPSLIMIT, MIN_MEMLIMIT)
    assert proof not in (kek.key, kek.commitment)


def test_weak_argon2_parameters_are_refused(master: bytes) -> None:
    with pytest.raises(FormatError):
        wrap_with_password(master, "pw", ACCOUNT, opslimit=1, memlimit=MIN_MEMLIMIT)
    with pytest.raises(FormatError):
        wrap_with_password(master, "pw", ACCOUNT, opslimit=2, memlimit=8 << 20)


def test_one_key_per_purpose(master: bytes) -> None:
    k = derive_vault_keys(master)
    keys = [k.tree_key, k.chunk_mac_key, k.chunk_locator_key, k.chunk_file_key]
    assert len(set(keys)) == 4 and k.cdc_seed % 2 == 1
    assert derive_vault_keys(new_master_key()).chunk_mac_key != k.chunk_mac_key


def test_chunk_identity_is_per_vault(master: bytes) -> None:
    k1, k2 = derive_vault_keys(master), derive_vault_keys(new_master_key())
    data = b"same bytes in two accounts" * 100
    assert chunk_mac(k1, data) == chunk_mac(k1, data)
    f1, f2 = chunk_file(k1, chunk_mac(k1, data)), chunk_file(k2, chunk_mac(k2, data))
    assert f1.file_id != f2.file_id and f1.key != f2.key  # no dedup across accounts


def test_chunk_plaintext_is_padded_and_checked(master: bytes) -> None:
    k = derive_vault_keys(master)
    data = b"x" * 300_000
    padded = chunk_file_plaintext(data)
    assert len(padded) == padme_length(len(data) + 1) >= len(data) + 1
    ref = ChunkRef(chunk_mac(k, data), len(data))
    assert open_chunk_plaintext(k, ref, padded) == data
    with pytest.raises(ChunkAuthError):
        open_chunk_plaintext(k, ChunkRef(chunk_mac(k, b"y" * 300_000), len(data)), padded)
    assert len(chunk_file_plaintext(b"a")) == 4096


@pytest.mark.parametrize("n", [0, 1, 2, 5, 255, 256, 1000, 65537, 1 << 20])
def test_padding_round_trip_and_overhead(n: int) -> None:
    data = bytes([0]) * n  # trailing zeros in the data must survive
    assert unpad(pad(data)) == data
    assert len(pad(data)) <= max(n + 1, int((n + 1) * 1.13))


def test_tree_object_round_trip_and_binding(master: bytes) -> None:
    k = derive_vault_keys(master)
    entry = Entry(
        kind="file",
        path="a/b.txt",
        counter=3,
        versions=[Version(n=1, size=1, mtime_ns=0, time=0, device="d", chunks=[])],
    )
    oid = new_object_id()
    sealed = seal_object(k, ACCOUNT, oid, entry.to_json())
    assert len(sealed) >= 256 + 40 and b"a/b.txt" not in sealed
    assert Entry.from_json(open_object(k, ACCOUNT, oid, sealed)) == entry
    with pytest.raises(VaultAuthError):
        open_object(k, ACCOUNT, new_object_id(), sealed)  # moved to another id
    with pytest.raises(VaultAuthError):
        open_object(k, "acct_other", oid, sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(VaultAuthError):
        open_object(k, ACCOUNT, oid, bytes(flipped))


def test_short_and_long_names_pad_to_the_same_size(master: bytes) -> None:
    k = derive_vault_keys(master)
    sizes = {
        len(seal_object(k, ACCOUNT, new_object_id(), {"kind": "dir", "path": p}))
        for p in ("a", "abcdefghij", "x" * 60)
    }
    assert len(sizes) == 1


@pytest.mark.parametrize("path", ["", "/abs", "a//b", "a/../b", ".", "a/./b", "a\x00b", "a\\b"])
def test_paths_that_could_escape_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)
    with pytest.raises(FormatError):
        Entry.from_json({"kind": "dir", "path": path, "counter": 0})


def test_link_code_text_round_trip() -> None:
    code = LinkCode.new()
    assert LinkCode.parse(code.to_text().upper()) == code
    with pytest.raises(FormatError):
        LinkCode.parse("abc")
