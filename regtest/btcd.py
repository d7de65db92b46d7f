"""btcd's JSON-RPC (HTTPS with basic auth), enough to mine blocks and read the tip."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import aiohttp


class BtcdRpc:
    def __init__(self, url: str, user: str, password: str, cert: Path):
        self.url = url
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._cert = cert
        self._session: aiohttp.ClientSession | None = None
        self._id = 0

    async def call(self, method: str, *params: Any) -> Any:
        if self._session is None:
            ctx = ssl.create_default_context(cafile=str(self._cert))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        self._id += 1
        body = {"jsonrpc": "1.0", "id": self._id, "method": method, "params": list(params)}
        async with self._session.post(self.url, json=body, headers=self._headers) as resp:
            data = await resp.json(content_type=None)
        if data.get("error"):
            raise RuntimeError(f"btcd {method}: {data['error']}")
        return data["result"]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
