"""Vault.upload_chunk creates a chunk file again when another device's collection deleted
it mid-upload (410), and gives up after a few tries (a fake gateway: one module's test)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from client.errors import GatewayError
from client.sync.vault import UPLOAD_ATTEMPTS, Vault
from storage.vault import ChunkRef, chunk_mac, derive_vault_keys

KEYS = derive_vault_keys(bytes(range(32)))
DATA = b"chunk bytes" * 100


class FakeGateway:
    """Answers create with 'uploading' and the PUT with 410 ``gone`` times, then 201."""

    def __init__(self, gone: int) -> None:
        self.gone = gone
        self.config = SimpleNamespace(gateway_url="http://gw")
        self.calls: list[str] = []

    async def call(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append(f"{method} {path.split('/')[-1]}")
        if path == "/v1/files":
            return {"state": "uploading", "missing": [0]}
        return {"state": "complete"}

    async def _request(self, method: str, url: str, **_: Any) -> None:
        self.calls.append(f"{method} chunk")
        if self.gone:
            self.gone -= 1
            raise GatewayError(410, "Gone", "file was deleted by its owner")


def vault(gateway: FakeGateway) -> Vault:
    return Vault(gateway, "acct_test", KEYS, 10)  # type: ignore[arg-type]


async def test_a_chunk_file_collected_mid_upload_is_created_again() -> None:
    gateway = FakeGateway(gone=1)
    ref = ChunkRef(chunk_mac(KEYS, DATA), len(DATA))
    fid, sent = await vault(gateway).upload_chunk(ref, DATA)
    assert sent and len(fid) == 26
    assert gateway.calls == ["POST files", "PUT chunk", "POST files", "PUT chunk", "POST complete"]


async def test_it_gives_up_after_a_few_tries() -> None:
    gateway = FakeGateway(gone=UPLOAD_ATTEMPTS)
    ref = ChunkRef(chunk_mac(KEYS, DATA), len(DATA))
    with pytest.raises(GatewayError) as raised:
        await vault(gateway).upload_chunk(ref, DATA)
    assert raised.value.status == 410
    assert gateway.calls.count("PUT chunk") == UPLOAD_ATTEMPTS
