"""Format v1, vault: the account's master key, its wraps, and the encrypted tree objects.

Pure: no I/O. The specification is docs/format.md §14 ("Vault"); this is its reference
implementation. One key per purpose, every wrap and object authenticated with associated data
that names its purpose, its account and the format version (the lessons of MEGA's 2022 breaks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from storage.crypto import (
    FILE_ID_BYTES,
    KEY_BYTES,
    MIN_CHUNK_SIZE,
    NONCE_BYTES,
    TAG_BYTES,
    b64url_decode,
    b64url_encode,
    decode_file_id,
    encode_file_id,
    hkdf_sha256,
)
from storage.errors import ChunkAuthError, FormatError, StorageError

VAULT_VERSION = 1
# Chunk files stay format-v1 files (docs/format.md §14.5) though plain uploads now write v2:
# re-creating a chunk file a vault already stored must give the same bytes, header included.
CHUNK_FILE_FORMAT_VERSION = 1
MASTER_KEY_BYTES = 32
LINK_SECRET_BYTES = 16
LINK_ID_BYTES = 8
CHUNK_MAC_BYTES = 32

# Every subkey of the master key: HKDF(M, VAULT_SALT, "bitcache/v1/vault/<purpose>").
VAULT_SALT = b"bitcache/v1/vault"
INFO_TREE_KEY = b"bitcache/v1/vault/tree-key"
INFO_CHUNK_MAC_KEY = b"bitcache/v1/vault/chunk-mac-key"
INFO_CHUNK_LOCATOR_KEY = b"bitcache/v1/vault/chunk-locator-key"
INFO_CHUNK_FILE_KEY = b"bitcache/v1/vault/chunk-file-key"
INFO_CDC_SEED = b"bitcache/v1/vault/cdc-seed"
INFO_LOG_KEY = b"bitcache/v1/vault/log-key"
INFO_MANIFEST_NONCE = b"bitcache/v1/vault/chunk-manifest-nonce"
# Key-encryption keys; a wrap for one purpose never opens as another.
PASSWORD_PREHASH_KEY = b"bitcache/v1/vault/password"
INFO_KEK = {
    "password": b"bitcache/v1/vault/kek/password",
    "link": b"bitcache/v1/vault/kek/link",
}
INFO_KEK_COMMITMENT = {
    "password": b"bitcache/v1/vault/kek-commitment/password",
    "link": b"bitcache/v1/vault/kek-commitment/link",
}
WRAP_AD_PREFIX = b"bitcache/v1/vault-wrap"
LOG_AD_PREFIX = b"bitcache/v1/vault-log"
OBJECT_AD_PREFIX = b"bitcache/v1/vault-object"

# argon2id cost: what writers use by default, and the floor readers accept (OWASP's floor is
# 19 MiB x 2; libsodium's INTERACTIVE is 64 MiB x 2).
DEFAULT_OPSLIMIT = 3
DEFAULT_MEMLIMIT = 128 << 20
MIN_OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
MIN_MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
MAX_OPSLIMIT = 20
MAX_MEMLIMIT = 1 << 30

# Content-defined chunking (FastCDC 2020): sizes fixed, gear table seeded per account.
CDC_MIN_SIZE = 256 << 10
CDC_AVG_SIZE = 1 << 20
CDC_MAX_SIZE = 4 << 20

WrapPurpose = Literal["password", "link"]
_WRAP_FIELDS = frozenset(
    {"version", "purpose", "account", "kdf", "commitment", "nonce", "ciphertext"}
)
MAX_ACCOUNT_ID_CHARS = 64


class VaultAuthError(ChunkAuthError):
    """A wrap or tree object failed authentication: wrong password or code, or tampered."""


class WrongPasswordError(VaultAuthError):
    """The password (or link code) does not open this wrap."""


# --- keys -------------------------------------------------------------------------------------


def new_master_key() -> bytes:
    """A fresh random 32-byte master key; made on the client, never sent in the clear."""
    return nacl.utils.random(MASTER_KEY_BYTES)


@dataclass(frozen=True)
class VaultKeys:
    """The purpose keys of one vault. No key serves two purposes."""

    tree_key: bytes = field(repr=False)  # seals tree objects
    chunk_mac_key: bytes = field(repr=False)  # chunk MAC: dedup identity, never public
    chunk_locator_key: bytes = field(repr=False)  # MAC -> public chunk file id
    chunk_file_key: bytes = field(repr=False)  # MAC -> chunk file key
    cdc_seed: int = field(repr=False)  # FastCDC gear-table seed (odd, 63-bit)
    log_key: bytes = field(repr=False)  # seals the deletion log (§14.9)


def derive_vault_keys(master_key: bytes) -> VaultKeys:
    """The purpose keys: HKDF-SHA256(M, "bitcache/v1/vault", info per purpose)."""
    if not isinstance(master_key, bytes | bytearray) or len(master_key) != MASTER_KEY_BYTES:
        raise FormatError(f"master key must be {MASTER_KEY_BYTES} bytes")
    m = bytes(master_key)
    seed = int.from_bytes(hkdf_sha256(m, VAULT_SALT, INFO_CDC_SEED, 8), "big")
    return VaultKeys(
        tree_key=hkdf_sha256(m, VAULT_SALT, INFO_TREE_KEY),
        chunk_mac_key=hkdf_sha256(m, VAULT_SALT, INFO_CHUNK_MAC_KEY),
        chunk_locator_key=hkdf_sha256(m, VAULT_SALT, INFO_CHUNK_LOCATOR_KEY),
        chunk_file_key=hkdf_sha256(m, VAULT_SALT, INFO_CHUNK_FILE_KEY),
        # 63 bits (the chunker shifts the seed left by one in 64 bits); odd, because zero
        # would select pyfastcdc's unseeded default table.
        cdc_seed=(seed >> 1) | 1,
        log_key=hkdf_sha256(m, VAULT_SALT, INFO_LOG_KEY),
    )


# --- canonical JSON ---------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, raw UTF-8 (the same rule as the manifest, §8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _require_account(account: str) -> bytes:
    if (
        not isinstance(account, str)
        or not 1 <= len(account) <= MAX_ACCOUNT_ID_CHARS
        or not account.isascii()
        or not account.isprintable()
    ):
        raise FormatError(f"account id must be 1-{MAX_ACCOUNT_ID_CHARS} printable ASCII chars")
    return account.encode("ascii")


# --- key wrapping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kek:
    """A key-encryption key and its public commitment (checked before any decryption)."""

    key: bytes = field(repr=False)
    commitment: bytes


def _kek(stretched: bytes, salt: bytes, purpose: WrapPurpose) -> Kek:
    return Kek(
        key=hkdf_sha256(stretched, salt, INFO_KEK[purpose]),
        commitment=hkdf_sha256(stretched, salt, INFO_KEK_COMMITMENT[purpose]),
    )


def _check_cost(opslimit: object, memlimit: object) -> tuple[int, int]:
    for value, low, high, what in (
        (opslimit, MIN_OPSLIMIT, MAX_OPSLIMIT, "opslimit"),
        (memlimit, MIN_MEMLIMIT, MAX_MEMLIMIT, "memlimit"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FormatError(f"argon2id {what} must be an integer in [{low}, {high}]")
    assert isinstance(opslimit, int) and isinstance(memlimit, int)
    return opslimit, memlimit


def password_kek(password: str, salt: bytes, opslimit: int, memlimit: int) -> Kek:
    """KEK from the password: argon2id over a keyed prehash, then HKDF.

    The prehash (BLAKE2b keyed with "bitcache/v1/vault/password") makes the argon2id input
    differ from any login proof computed over the bare password, whatever salt a gateway
    hands out; HKDF with a purpose string keeps the raw argon2id output unused.
    """
    if len(salt) != argon2id.SALTBYTES:
        raise FormatError(f"argon2id salt must be {argon2id.SALTBYTES} bytes")
    opslimit, memlimit = _check_cost(opslimit, memlimit)
    prehash = hashlib.blake2b(
        password.encode("utf-8"), digest_size=64, key=PASSWORD_PREHASH_KEY
    ).digest()
    stretched = argon2id.kdf(32, prehash, bytes(salt), opslimit=opslimit, memlimit=memlimit)
    return _kek(stretched, bytes(salt), "password")


def link_kek(secret: bytes, link_id: bytes) -> Kek:
    """KEK from a device-link code: 128 random bits need no stretching, only HKDF."""
    if len(secret) != LINK_SECRET_BYTES or len(link_id) != LINK_ID_BYTES:
        raise FormatError("link code has the wrong length")
    return _kek(bytes(secret), bytes(link_id), "link")


def _wrap_ad(header: Mapping[str, Any]) -> bytes:
    return WRAP_AD_PREFIX + b"\x00" + canonical_json(dict(header))


@dataclass(frozen=True)
class WrappedKey:
    """A wrapped master key as the gateway stores it (JSON, all public)."""

    purpose: WrapPurpose
    account: str
    kdf: dict[str, Any]
    commitment: bytes
    nonce: bytes
    ciphertext: bytes

    def header(self) -> dict[str, Any]:
        """Everything but nonce and ciphertext: the associated data of the wrap."""
        return {
            "version": VAULT_VERSION,
            "purpose": self.purpose,
            "account": self.account,
            "kdf": self.kdf,
            "commitment": b64url_encode(self.commitment),
        }

    def to_json_dict(self) -> dict[str, Any]:
        return self.header() | {
            "nonce": b64url_encode(self.nonce),
            "ciphertext": b64url_encode(self.ciphertext),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> WrappedKey:
        if not isinstance(data, Mapping) or set(data.keys()) != _WRAP_FIELDS:
            raise FormatError(f"wrapped key must have exactly the fields {sorted(_WRAP_FIELDS)}")
        if data["version"] != VAULT_VERSION or isinstance(data["version"], bool):
            raise FormatError(f"unsupported vault version {data['version']!r}")
        purpose = data["purpose"]
        if purpose not in INFO_KEK:
            raise FormatError(f"unknown wrap purpose {purpose!r}")
        _require_account(data["account"])
        kdf = data["kdf"]
        _check_kdf(purpose, kdf)
        return cls(
            purpose=purpose,
            account=data["account"],
            kdf=dict(kdf),
            commitment=b64url_decode(data["commitment"], KEY_BYTES, "commitment"),
            nonce=b64url_decode(data["nonce"], NONCE_BYTES, "nonce"),
            ciphertext=b64url_decode(
                data["ciphertext"], MASTER_KEY_BYTES + TAG_BYTES, "ciphertext"
            ),
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> WrappedKey:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"wrapped key is not JSON: {exc}") from exc
        return cls.from_json_dict(data)


def _check_kdf(purpose: str, kdf: object) -> None:
    if not isinstance(kdf, Mapping):
        raise FormatError("kdf must be an object")
    if purpose == "password":
        if set(kdf.keys()) != {"name", "opslimit", "memlimit", "salt"} or kdf["name"] != "argon2id":
            raise FormatError(
                "a password wrap needs kdf {name: argon2id, opslimit, memlimit, salt}"
            )
        _check_cost(kdf["opslimit"], kdf["memlimit"])
        b64url_decode(kdf["salt"], argon2id.SALTBYTES, "argon2id salt")
    else:
        if set(kdf.keys()) != {"name", "link_id"} or kdf["name"] != "hkdf-sha256":
            raise FormatError("a link wrap needs kdf {name: hkdf-sha256, link_id}")
        b64url_decode(kdf["link_id"], LINK_ID_BYTES, "link id")


def _seal_wrap(
    master_key: bytes,
    kek: Kek,
    purpose: WrapPurpose,
    account: str,
    kdf: dict[str, Any],
    nonce: bytes | None,
) -> WrappedKey:
    if len(master_key) != MASTER_KEY_BYTES:
        raise FormatError(f"master key must be {MASTER_KEY_BYTES} bytes")
    _require_account(account)
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else bytes(nonce)
    draft = WrappedKey(purpose, account, kdf, kek.commitment, nonce, b"")
    ct = crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(master_key), _wrap_ad(draft.header()), nonce, kek.key
    )
    return WrappedKey(purpose, account, kdf, kek.commitment, nonce, ct)


def wrap_with_password(
    master_key: bytes,
    password: str,
    account: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> WrappedKey:
    """The master key wrapped under a key derived from the password (random salt)."""
    salt = nacl.utils.random(argon2id.SALTBYTES) if salt is None else bytes(salt)
    kek = password_kek(password, salt, opslimit, memlimit)
    kdf: dict[str, Any] = {
        "name": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": b64url_encode(salt),
    }
    return _seal_wrap(master_key, kek, "password", account, kdf, nonce)


def _open_wrap(wrapped: WrappedKey, kek: Kek, purpose: WrapPurpose, account: str) -> bytes:
    # Purpose and account are checked by the caller's expectation, not taken from the data.
    if wrapped.purpose != purpose:
        raise VaultAuthError(f"this is a {wrapped.purpose} wrap, not a {purpose} wrap")
    if wrapped.account != account:
        raise VaultAuthError("this wrap belongs to another account")
    # Committing check first: an AEAD that is not key-committing would otherwise let a
    # malicious server test many passwords with one crafted ciphertext.
    if not hmac.compare_digest(kek.commitment, wrapped.commitment):
        raise WrongPasswordError(f"wrong {'password' if purpose == 'password' else 'link code'}")
    try:
        master = crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrapped.ciphertext, _wrap_ad(wrapped.header()), wrapped.nonce, kek.key
        )
    except nacl.exceptions.CryptoError:
        raise VaultAuthError("the wrapped key was tampered with") from None
    return bytes(master)


def unwrap_with_password(wrapped: WrappedKey, password: str, account: str) -> bytes:
    """The master key, or WrongPasswordError / VaultAuthError."""
    if wrapped.purpose != "password":
        raise VaultAuthError(f"this is a {wrapped.purpose} wrap, not a password wrap")
    kdf = wrapped.kdf
    salt = b64url_decode(kdf["salt"], argon2id.SALTBYTES, "argon2id salt")
    kek = password_kek(password, salt, kdf["opslimit"], kdf["memlimit"])
    return _open_wrap(wrapped, kek, "password", account)


# --- device-link codes ------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkCode:
    """A one-time code shown on a device that is in: `<link id>-<secret>` in base32."""

    link_id: bytes
    secret: bytes = field(repr=False)

    def to_text(self) -> str:
        return f"{_b32(self.link_id)}-{_b32(self.secret)}"

    @property
    def name(self) -> str:
        """Where the gateway keeps its wrap: ``link-<link id>``."""
        return f"link-{_b32(self.link_id)}"

    @classmethod
    def new(cls) -> LinkCode:
        return cls(nacl.utils.random(LINK_ID_BYTES), nacl.utils.random(LINK_SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        parts = text.strip().lower().replace(" ", "").split("-")
        if len(parts) != 2:
            raise FormatError("a link code looks like <id>-<secret>")
        return cls(_unb32(parts[0], LINK_ID_BYTES), _unb32(parts[1], LINK_SECRET_BYTES))


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str, length: int) -> bytes:
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, binascii.Error):
        raise FormatError("link code is not base32") from None
    if len(data) != length or _b32(data) != text:
        raise FormatError("link code has the wrong length")
    return data


def wrap_with_link(
    master_key: bytes, code: LinkCode, account: str, *, nonce: bytes | None = None
) -> WrappedKey:
    kek = link_kek(code.secret, code.link_id)
    kdf: dict[str, Any] = {"name": "hkdf-sha256", "link_id": b64url_encode(code.link_id)}
    return _seal_wrap(master_key, kek, "link", account, kdf, nonce)


def unwrap_with_link(wrapped: WrappedKey, code: LinkCode, account: str) -> bytes:
    if wrapped.purpose != "link":
        raise VaultAuthError(f"this is a {wrapped.purpose} wrap, not a link wrap")
    if wrapped.kdf.get("link_id") != b64url_encode(code.link_id):
        raise VaultAuthError("this wrap is for another link code")
    return _open_wrap(wrapped, link_kek(code.secret, code.link_id), "link", account)


# --- padding ----------------------------------------------------------------------------------


def padme_length(length: int) -> int:
    """Padmé (PURBs, Nikitin et al. 2019): at most ~12 % overhead, O(log log n) bits leak."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def pad(data: bytes, minimum: int = 0) -> bytes:
    """``data ‖ 0x80 ‖ 0x00…`` up to Padmé(len + 1), and at least ``minimum`` bytes."""
    target = max(minimum, padme_length(len(data) + 1))
    return bytes(data) + b"\x80" + bytes(target - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """Inverse of :func:`pad`; FormatError if the padding is malformed."""
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != 0x80:
        raise FormatError("bad padding")
    return bytes(padded[: end - 1])


# --- chunks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRef:
    """A chunk as the vault knows it: its MAC (identity, dedup) and plaintext length."""

    mac: bytes
    length: int

    def to_json(self) -> list[Any]:
        return [b64url_encode(self.mac), self.length]

    @classmethod
    def from_json(cls, value: object) -> ChunkRef:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or isinstance(value[1], bool)
            or not isinstance(value[1], int)
            or not 0 < value[1] <= CDC_MAX_SIZE
        ):
            raise FormatError("a chunk is [mac, length] with 0 < length <= 4 MiB")
        return cls(b64url_decode(value[0], CHUNK_MAC_BYTES, "chunk mac"), value[1])


def chunk_mac(keys: VaultKeys, plaintext: bytes | memoryview) -> bytes:
    """BLAKE2b-256 keyed with the account's chunk-MAC key: same bytes, same MAC, per vault."""
    return hashlib.blake2b(plaintext, digest_size=CHUNK_MAC_BYTES, key=keys.chunk_mac_key).digest()


@dataclass(frozen=True)
class ChunkFile:
    """Where a vault chunk lives on the gateway: a format-v1 file of one chunk."""

    file_id: bytes
    key: bytes = field(repr=False)

    @property
    def file_id_text(self) -> str:
        return encode_file_id(self.file_id)

    def manifest_nonce(self) -> bytes:
        # Deterministic: re-creating the same chunk file must give byte-identical bytes.
        return hkdf_sha256(self.key, self.file_id, INFO_MANIFEST_NONCE, NONCE_BYTES)


def chunk_file(keys: VaultKeys, mac: bytes) -> ChunkFile:
    """Public file id and secret file key of the chunk with MAC ``mac`` (both under M)."""
    if len(mac) != CHUNK_MAC_BYTES:
        raise FormatError(f"chunk mac must be {CHUNK_MAC_BYTES} bytes")
    fid = hashlib.blake2b(mac, digest_size=FILE_ID_BYTES, key=keys.chunk_locator_key).digest()
    key = hashlib.blake2b(mac, digest_size=KEY_BYTES, key=keys.chunk_file_key).digest()
    return ChunkFile(fid, key)


def chunk_file_plaintext(plaintext: bytes) -> bytes:
    """What is sealed as the chunk file: the chunk, padded (Padmé, at least 4 KiB)."""
    return pad(plaintext, MIN_CHUNK_SIZE)


def open_chunk_plaintext(keys: VaultKeys, ref: ChunkRef, padded: bytes) -> bytes:
    """The chunk from its opened chunk file, checked against the vault's MAC and length."""
    try:
        data = unpad(padded)
    except FormatError:
        raise ChunkAuthError("vault chunk has bad padding") from None
    if len(data) != ref.length or not hmac.compare_digest(chunk_mac(keys, data), ref.mac):
        raise ChunkAuthError("vault chunk does not match its MAC")
    return data


# --- tree objects -----------------------------------------------------------------------------


def new_object_id() -> str:
    """A fresh random tree-object id (16 bytes, base32 text like a file id)."""
    return encode_file_id(nacl.utils.random(FILE_ID_BYTES))


def object_associated_data(account: str, object_id: str) -> bytes:
    """AD = "bitcache/v1/vault-object" ‖ uint8(len(account)) ‖ account ‖ object id (16)."""
    acct = _require_account(account)
    return OBJECT_AD_PREFIX + bytes([len(acct)]) + acct + decode_file_id(object_id)


def log_associated_data(account: str) -> bytes:
    """AD = "bitcache/v1/vault-log" ‖ uint8(len(account)) ‖ account."""
    acct = _require_account(account)
    return LOG_AD_PREFIX + bytes([len(acct)]) + acct


def _seal_json(key: bytes, ad: bytes, body: Mapping[str, Any], nonce: bytes | None) -> bytes:
    """nonce(24) ‖ XChaCha20-Poly1305(key, nonce, AD, pad(canonical JSON, 256)); the
    padding to at least 256 bytes keeps short names from showing through."""
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise FormatError(f"nonce must be {NONCE_BYTES} bytes")
    padded = pad(canonical_json(dict(body)), 256)
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, nonce, key)


def _open_json(key: bytes, ad: bytes, sealed: bytes, what: str, forged: str) -> dict[str, Any]:
    """The JSON object sealed by _seal_json; VaultAuthError (saying `forged`) if it does
    not open under this key and AD."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise VaultAuthError(f"{what} too short")
    try:
        padded = crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(sealed[NONCE_BYTES:]), ad, bytes(sealed[:NONCE_BYTES]), key
        )
    except nacl.exceptions.CryptoError:
        raise VaultAuthError(f"{what} failed authentication: {forged}") from None
    try:
        value = json.loads(unpad(padded))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not a JSON object")
    return value


def seal_log(
    keys: VaultKeys, account: str, body: Mapping[str, Any], nonce: bytes | None = None
) -> bytes:
    """The deletion log (§14.9): nonce(24) ‖ XChaCha20-Poly1305(log_key, nonce, AD,
    pad(canonical JSON, 256)). Its body names the change it was written at."""
    return _seal_json(keys.log_key, log_associated_data(account), body, nonce)


def open_log(keys: VaultKeys, account: str, sealed: bytes) -> dict[str, Any]:
    """The JSON object inside a sealed deletion log; VaultAuthError if it is not ours."""
    return _open_json(
        keys.log_key,
        log_associated_data(account),
        sealed,
        "vault log",
        "tampered or another vault's",
    )


def seal_object(
    keys: VaultKeys,
    account: str,
    object_id: str,
    body: Mapping[str, Any],
    nonce: bytes | None = None,
) -> bytes:
    """nonce(24) ‖ XChaCha20-Poly1305(tree_key, nonce, AD, pad(canonical JSON, 256))."""
    return _seal_json(keys.tree_key, object_associated_data(account, object_id), body, nonce)


def open_object(keys: VaultKeys, account: str, object_id: str, sealed: bytes) -> dict[str, Any]:
    """The JSON object inside a sealed tree object; VaultAuthError if it is not ours."""
    return _open_json(
        keys.tree_key,
        object_associated_data(account, object_id),
        sealed,
        "vault object",
        "tampered, moved, or another vault's",
    )
