"""The account's vault on the gateway: unlock it, read and write tree objects, move chunks.

Chunk files are ordinary format-v1 files of one chunk (§14.5), so the gateway's quota, dedup of
identical files and free downloads for the owner all apply unchanged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.api import BitcacheClient
from client.config import atomic_write_private
from client.errors import ClientError, GatewayError
from client.http import _b64url_any
from client.sync.gc import DeletionLog
from storage.crypto import (
    CHUNK_OVERHEAD,
    MIN_CHUNK_SIZE,
    FileDecryptor,
    FileEncryptor,
    b64url_decode,
    b64url_encode,
)
from storage.file_batch import BATCH_MEDIA_TYPE, encode_batch
from storage.manifest import Manifest, seal_manifest
from storage.vault import (
    CHUNK_FILE_FORMAT_VERSION,
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    MASTER_KEY_BYTES,
    ChunkRef,
    LinkCode,
    VaultKeys,
    WrappedKey,
    chunk_file,
    chunk_file_plaintext,
    derive_vault_keys,
    new_master_key,
    open_chunk_plaintext,
    open_log,
    open_object,
    seal_log,
    seal_object,
    unwrap_with_link,
    unwrap_with_password,
    wrap_with_link,
    wrap_with_password,
)
from storage.vault_tree import Entry

WRITE_BATCH_BYTES = 4 << 20
WRITE_BATCH_OBJECTS = 500
UPLOAD_ATTEMPTS = 3  # a chunk file collected by another device mid-upload is created again


# --- the master key on this device -------------------------------------------------------------


def key_file(config_path: Path) -> Path:
    """Unlocked master keys live beside the client config, readable by the owner only."""
    return config_path.with_name(config_path.stem + ".vault-keys.json")


def load_master(path: Path, account_id: str) -> bytes | None:
    try:
        data = json.loads(path.read_text())
        return b64url_decode(data[account_id], MASTER_KEY_BYTES, "master key")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_master(path: Path, account_id: str, master: bytes) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[account_id] = b64url_encode(master)
    atomic_write_private(path, json.dumps(data).encode())


async def vault_info(client: BitcacheClient) -> dict[str, Any]:
    return await client.call("GET", "/v1/vault")


async def init_vault(
    client: BitcacheClient,
    keys_path: Path,
    password: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> str:
    """Makes the master key here, stores only its password wrap; returns the account id."""
    account = str((await vault_info(client))["account_id"])
    master = new_master_key()
    wrapped = await asyncio.to_thread(
        wrap_with_password, master, password, account, opslimit=opslimit, memlimit=memlimit
    )
    reply = await client.call(
        "PUT",
        "/v1/vault/keys/password",
        json_body={"wrapped": wrapped.to_json_dict(), "create_only": True},
        ok=(201, 409),
    )
    if "name" not in reply:
        raise ClientError("this account already has a vault: use `bitcache vault unlock`")
    save_master(keys_path, account, master)
    return account


async def unlock_with_password(client: BitcacheClient, keys_path: Path, password: str) -> str:
    account = str((await vault_info(client))["account_id"])
    reply = await client.call("GET", "/v1/vault/keys/password")
    wrapped = WrappedKey.from_json_dict(reply["wrapped"])
    master = await asyncio.to_thread(unwrap_with_password, wrapped, password, account)
    save_master(keys_path, account, master)
    return account


async def unlock_at_login(client: BitcacheClient, keys_path: Path, password: str) -> bool:
    """After `bitcache login`: unlocks the vault with the login password if the account has
    a password-wrapped vault; False if it has none (nothing to unlock)."""
    if "password" not in (await vault_info(client)).get("keys", []):
        return False
    await unlock_with_password(client, keys_path, password)
    return True


async def make_link(client: BitcacheClient, keys_path: Path) -> str:
    """A one-time code another device can unlock the vault with."""
    account = str((await vault_info(client))["account_id"])
    master = load_master(keys_path, account)
    if master is None:
        raise ClientError("the vault is locked on this device")
    code = LinkCode.new()
    wrapped = wrap_with_link(master, code, account)
    await client.call(
        "PUT",
        f"/v1/vault/keys/{code.name}",
        json_body={"wrapped": wrapped.to_json_dict(), "create_only": True},
    )
    return code.to_text()


async def unlock_with_link(client: BitcacheClient, keys_path: Path, text: str) -> str:
    account = str((await vault_info(client))["account_id"])
    code = LinkCode.parse(text)
    reply = await client.call("GET", f"/v1/vault/keys/{code.name}")
    master = unwrap_with_link(WrappedKey.from_json_dict(reply["wrapped"]), code, account)
    save_master(keys_path, account, master)
    await client.call("DELETE", f"/v1/vault/keys/{code.name}")  # one time only
    return account


# --- the vault in use -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkFileDraft:
    """One chunk as its chunk file, ready to send: id, header and sealed manifest; the
    chunk itself is sealed on demand (not at all when the gateway already holds it)."""

    file_id: str
    header: dict[str, Any]
    manifest: str  # sealed, base64url
    encryptor: FileEncryptor
    padded: bytes

    @classmethod
    def of(cls, keys: VaultKeys, ref: ChunkRef, data: bytes) -> _ChunkFileDraft:
        cf = chunk_file(keys, ref.mac)
        padded = chunk_file_plaintext(data)
        enc = FileEncryptor(
            cf.key,
            cf.file_id,
            len(padded),
            max(MIN_CHUNK_SIZE, len(padded)),
            CHUNK_FILE_FORMAT_VERSION,
        )
        manifest = Manifest(
            name="chunk", size=len(padded), chunk_size=enc.header.chunk_size, modified=None
        )
        sealed_manifest = seal_manifest(enc.keys, cf.file_id, manifest, cf.manifest_nonce())
        return cls(
            cf.file_id_text,
            enc.header.to_json_dict(),
            b64url_encode(sealed_manifest),
            enc,
            padded,
        )

    def seal(self) -> bytes:
        """Chunk 0, the file's only chunk."""
        return self.encryptor.seal(0, self.padded)


@dataclass
class Vault:
    client: BitcacheClient
    account: str
    keys: VaultKeys = field(repr=False)
    keep_versions: int
    trash_days: int | None = 30  # the tenant's: trash entries older are purged (None: never)

    @classmethod
    async def open(cls, client: BitcacheClient, keys_path: Path) -> Vault:
        info = await vault_info(client)
        account = str(info["account_id"])
        master = load_master(keys_path, account)
        if master is None:
            hint = "unlock" if info.get("keys") else "init"
            raise ClientError(f"the vault is locked on this device: run `bitcache vault {hint}`")
        days = info.get("trash_days", 30)
        return cls(
            client,
            account,
            derive_vault_keys(master),
            int(info["keep_versions"]),
            None if days is None else int(days),
        )

    async def changes(self, since: int, wait: int = 0) -> tuple[int, dict[str, Entry | None]]:
        """Everything changed after ``since`` (all pages), decrypted and checked."""
        counter, out, _ = await self.changes_and_log(since, wait)
        return counter, out

    async def changes_and_log(
        self, since: int, wait: int = 0
    ) -> tuple[int, dict[str, Entry | None], DeletionLog | None]:
        """:meth:`changes`, and the deletion log if it was written after ``since``."""
        out: dict[str, Entry | None] = {}
        log: DeletionLog | None = None
        counter = since
        while True:
            reply = await self.client.call("GET", f"/v1/vault/changes?since={counter}&wait={wait}")
            wait = 0
            new_counter = int(reply["counter"])
            if new_counter < counter:
                raise ClientError("the gateway's vault went back in time (rollback refused)")
            for item in reply["objects"]:
                oid, data = str(item["id"]), item["data"]
                if data is None:
                    out[oid] = None
                    continue
                body = open_object(self.keys, self.account, oid, _b64url_any(data, "object"))
                entry = Entry.from_json(body)
                if entry.counter != int(item["counter"]):
                    raise ClientError(f"vault object {oid} is replayed from another change")
                out[oid] = entry
            if reply.get("log") is not None:
                found = self._open_log(reply["log"])
                if log is None or found.counter > log.counter:
                    log = found
            counter = new_counter
            if not reply.get("more"):
                return counter, out, log

    def _open_log(self, item: dict[str, Any]) -> DeletionLog:
        body = open_log(self.keys, self.account, _b64url_any(item["data"], "log"))
        try:
            log = DeletionLog.from_json(body)
        except ValueError as exc:
            raise ClientError(f"the vault's deletion log is malformed: {exc}") from None
        if log.counter != int(item["counter"]):
            raise ClientError("the vault's deletion log is replayed from another change")
        return log

    async def write(
        self,
        if_counter: int,
        entries: dict[str, Entry | None],
        log: DeletionLog | None = None,
        delete_files: list[str] | None = None,
    ) -> int | None:
        """Writes in batches at the vault's counter; None if another device got there first
        (then nothing of the failing batch is written: read the changes, merge, retry).
        ``log`` (and ``delete_files``, the chunk files a collection deletes) go with the
        first batch, in its compare-and-set."""
        counter = if_counter
        pending = list(entries.items())
        first = log is not None
        while pending or first:
            put: list[dict[str, str]] = []
            delete: list[str] = []
            size = 0
            while pending and size < WRITE_BATCH_BYTES and len(put) + len(delete) < 500:
                oid, entry = pending.pop(0)
                if entry is None:
                    delete.append(oid)
                    continue
                sealed = seal_object(
                    self.keys,
                    self.account,
                    oid,
                    entry.model_copy(update={"counter": counter + 1}).to_json(),
                )
                put.append({"id": oid, "data": b64url_encode(sealed)})
                size += len(sealed)
            body: dict[str, Any] = {"if_counter": counter, "put": put, "delete": delete}
            if first and log is not None:
                sealed_log = seal_log(
                    self.keys,
                    self.account,
                    log.model_copy(update={"counter": counter + 1}).to_json(),
                )
                body["log"] = b64url_encode(sealed_log)
                body["delete_files"] = list(delete_files or [])
            first = False
            reply = await self.client.call(
                "POST", "/v1/vault/objects", json_body=body, ok=(200, 409)
            )
            if "type" in reply:  # 409: the vault moved on
                return None
            counter = int(reply["counter"])
        return counter

    # --- chunks -------------------------------------------------------------------------------

    async def upload_chunk(self, ref: ChunkRef, data: bytes) -> tuple[str, bool]:
        """Stores one chunk as its chunk file (idempotent); returns the file id and whether
        its bytes were sent (False: the gateway already held the whole chunk file)."""
        draft = _ChunkFileDraft.of(self.keys, ref, data)
        for _ in range(UPLOAD_ATTEMPTS - 1):
            try:
                return await self._upload_draft(draft)
            except GatewayError as exc:
                if exc.status != 410:
                    raise
                # Another device's collection deleted this chunk file while we were storing
                # it (it was named nowhere then): create it again (docs/format.md §14.9).
        return await self._upload_draft(draft)

    async def _upload_draft(self, draft: _ChunkFileDraft) -> tuple[str, bool]:
        base = self.client.config.gateway_url
        fid = draft.file_id
        body = {"header": draft.header, "manifest": draft.manifest}
        state = await self.client.call("POST", "/v1/files", json_body=body)
        if state.get("state") == "complete":
            return fid, False  # already there: dedup within the account
        sent = bool(state.get("missing"))
        if sent:
            sealed = await asyncio.to_thread(draft.seal)
            await self.client._request(
                "PUT",
                f"{base}/v1/files/{fid}/chunks/0",
                data=sealed,
                headers={"Content-Type": "application/octet-stream"},
                ok=(200, 201),
            )
        await self.client.call("POST", f"/v1/files/{fid}/complete")
        return fid, sent

    async def upload_batch(self, chunks: list[tuple[ChunkRef, bytes]]) -> list[tuple[str, bool]]:
        """Stores many small chunks as their chunk files in one request (POST
        /v1/files/batch, idempotent per item); returns each file id and whether it was
        stored now (False: the gateway already held it)."""

        def seal_all() -> list[tuple[_ChunkFileDraft, bytes]]:
            drafts = (_ChunkFileDraft.of(self.keys, r, d) for r, d in chunks)
            return [(draft, draft.seal()) for draft in drafts]

        sealed = await asyncio.to_thread(seal_all)
        body = encode_batch([(d.header, d.manifest, chunk) for d, chunk in sealed])
        reply = await self.client._request(
            "POST",
            f"{self.client.config.gateway_url}/v1/files/batch",
            data=body,
            headers={"Content-Type": BATCH_MEDIA_TYPE},
            ok=(200,),
        )
        states = {str(i["file_id"]): i["state"] for i in reply.json_object()["items"]}
        out = []
        for draft, _ in sealed:
            fid = draft.file_id
            if fid not in states:
                raise GatewayError(200, "Bad answer", f"the batch reply lacks {fid}")
            out.append((fid, states[fid] == "stored"))
        return out

    async def fetch_chunk(self, ref: ChunkRef) -> bytes:
        """One chunk, fetched free as its owner, opened and checked against its MAC."""
        cf = chunk_file(self.keys, ref.mac)
        padded_len = len(chunk_file_plaintext(bytes(ref.length)))
        header = FileEncryptor(
            cf.key, cf.file_id, padded_len, max(MIN_CHUNK_SIZE, padded_len)
        ).header
        base = self.client.config.gateway_url
        reply = await self.client._request(
            "GET",
            f"{base}/v1/files/{cf.file_id_text}/chunks/0",
            ok=(200,),
            limit=padded_len + CHUNK_OVERHEAD + 1,
        )
        if reply.truncated:
            raise GatewayError(200, "Bad answer", "a vault chunk is larger than it should be")
        padded = FileDecryptor(cf.key, header).open(0, reply.body)
        return open_chunk_plaintext(self.keys, ref, padded)
