"""The remote file: what a share link points at, checked and decrypted (nothing paid)."""

from __future__ import annotations

from dataclasses import dataclass

from client.errors import GatewayError
from client.http import _b64url_any, _clean, _is_count, _Requester
from storage.capability import ShareLink
from storage.crypto import FileDecryptor, FileHeader, encode_file_id
from storage.errors import FormatError
from storage.manifest import Manifest, open_manifest


@dataclass(frozen=True)
class FileInfo:
    """What a share link points at, decrypted: nothing here was paid for."""

    gateway: str
    file_id: str
    name: str
    size: int
    media_type: str
    modified: int | None
    chunk_size: int
    chunk_count: int
    price_msat: int  # per chunk
    state: str  # "uploading" or "complete"

    @property
    def total_price_msat(self) -> int:
        return self.price_msat * self.chunk_count


@dataclass(frozen=True)
class _Remote:
    link: ShareLink
    file_id: str
    state: str
    header: FileHeader
    manifest: Manifest
    decryptor: FileDecryptor
    price_msat: int
    chunks_present: int

    def chunk_url(self, index: int) -> str:
        return f"{self.link.gateway}/v1/files/{self.file_id}/chunks/{index}"

    def run_url(self, first: int, last: int) -> str:
        return f"{self.link.gateway}/v1/files/{self.file_id}/chunks?first={first}&last={last}"

    def info(self) -> FileInfo:
        m = self.manifest
        return FileInfo(
            gateway=self.link.gateway,
            file_id=self.file_id,
            name=m.name,
            size=m.size,
            media_type=m.media_type,
            modified=m.modified,
            chunk_size=m.chunk_size,
            chunk_count=self.header.chunk_count,
            price_msat=self.price_msat,
            state=self.state,
        )


async def _open_remote(client: _Requester, link: ShareLink) -> _Remote:
    """Fetch and check what ``link`` points at (free; raises WrongKeyError for a wrong key)."""
    file_id = encode_file_id(link.file_id)
    reply = await client._request("GET", f"{link.gateway}/v1/files/{file_id}", ok=(200,))
    state = reply.json_object()
    raw_header = state.get("header")
    try:
        if not isinstance(raw_header, dict):
            raise FormatError("missing")
        header = FileHeader.from_json_dict(raw_header)
    except FormatError as exc:
        raise GatewayError(200, "Bad answer", f"the file header is invalid: {exc}") from None
    if header.file_id != link.file_id:
        raise GatewayError(200, "Bad answer", "the gateway described a different file")
    # Checks the key commitment: a wrong key stops here, before anything is paid.
    decryptor = FileDecryptor(link.key, header)
    sealed = _b64url_any(state.get("manifest"), "manifest")
    manifest = open_manifest(decryptor.keys, header.file_id, sealed)
    if manifest.size != header.plaintext_size or manifest.chunk_size != header.chunk_size:
        raise GatewayError(
            200, "Bad answer", "the file header's sizes do not match the encrypted manifest"
        )
    price, present = state.get("price_msat"), state.get("chunks_present", 0)
    if state.get("owned") is True:
        price = 0  # the gateway serves its owner's files without payment
    if not _is_count(price) or not _is_count(present):
        raise GatewayError(200, "Bad answer", "price_msat or chunks_present is malformed")
    return _Remote(
        link=link,
        file_id=file_id,
        state=_clean(state.get("state"), 20) or "unknown",
        header=header,
        manifest=manifest,
        decryptor=decryptor,
        price_msat=price,
        chunks_present=present,
    )
