"""Test helpers: raw uploads over HTTP and a TCP proxy that can be cut and restored."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.config import GatewayConfig
from regtest.network import Network
from storage.crypto import (
    DEFAULT_CHUNK_SIZE,
    FileEncryptor,
    b64url_encode,
    derive_keys,
    encode_file_id,
    new_file_id,
    new_file_key,
)
from storage.manifest import Manifest, seal_manifest


async def create_account(session: aiohttp.ClientSession, gateway: str) -> tuple[str, str]:
    """(account id, API key) of a new account."""
    async with session.post(f"{gateway}/v1/accounts") as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    return body["account_id"], body["api_key"]


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass
class Uploaded:
    api_key: str
    file_id: str
    key: bytes
    plaintext: bytes
    sealed: list[bytes]
    encryptor: FileEncryptor


async def upload_raw(
    session: aiohttp.ClientSession,
    gateway: str,
    plaintext: bytes,
    price_msat: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    complete: bool = True,
    api_key: str | None = None,
) -> Uploaded:
    """Encrypts and uploads with plain HTTP calls (no client library), per docs/api.md."""
    if api_key is None:
        _, api_key = await create_account(session, gateway)
    headers = bearer(api_key)
    key, fid = new_file_key(), new_file_id()
    enc = FileEncryptor(key, fid, len(plaintext), chunk_size)
    manifest = seal_manifest(
        derive_keys(key, fid),
        fid,
        Manifest(name="t.bin", size=len(plaintext), chunk_size=chunk_size),
    )
    body: dict[str, object] = {
        "header": enc.header.to_json_dict(),
        "manifest": b64url_encode(manifest),
    }
    if price_msat is not None:
        body["price_msat"] = price_msat
    async with session.post(f"{gateway}/v1/files", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
    file_id = encode_file_id(fid)
    sealed = []
    for i in range(enc.chunk_count):
        chunk = enc.seal(i, plaintext[i * chunk_size : (i + 1) * chunk_size])
        sealed.append(chunk)
        async with session.put(
            f"{gateway}/v1/files/{file_id}/chunks/{i}", data=chunk, headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
    if complete:
        async with session.post(f"{gateway}/v1/files/{file_id}/complete", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    return Uploaded(api_key, file_id, key, plaintext, sealed, enc)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, with the faults a network can have, without
    touching either end:

    - `cut()` drops every connection and stops listening; `restore()` listens again on
      the same port (a dependency going down and coming back);
    - `cut_mid_message()` forwards only the first half of the next piece of data the
      target sends on a connection already carrying data (past its TLS handshake), then
      closes that connection: a stream broken in the middle of a message;
    - `stall()` holds all data in both directions with the connections open, until
      `resume()` (a hung peer, a full network queue); `stall(replies_only=True)` lets
      requests through to the target but holds its answers once the caller has sent
      more than its first piece of data (a TLS ClientHello: the handshake completes, the
      request is acted on, the caller never hears);
    - `slow(delay_s)` delays every piece of data by `delay_s` (a slow link).

    `sent` counts the bytes forwarded to the target: whether the gateway called it at all
    (it cannot read TLS, only see that something was said).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # requests to the target
        self._flowing.set()
        self._replying = asyncio.Event()  # answers from the target
        self._replying.set()
        self._cut_next: asyncio.Future[int] | None = None
        self._cuttable: set[asyncio.StreamWriter] = set()  # chosen when the cut is armed
        self._received: dict[asyncio.StreamWriter, int] = {}  # bytes from the target
        self._pieces_sent: dict[asyncio.StreamWriter, int] = {}  # pieces of data to the target
        self.accepted = 0  # connections accepted so far
        self.sent = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.cut()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._conns):
            writer.close()
        self._conns.clear()

    async def restore(self) -> None:
        await self.start()

    def cut_mid_message(self, only: set[int] | None = None) -> asyncio.Future[int]:
        """Arms the cut (for the connections named in `only`, by their id in
        received_by_connection(), else any past its handshake); the future resolves to
        the bytes let through once it happened."""
        self._cuttable = {
            w for w, n in self._received.items() if n > 0 and (only is None or id(w) in only)
        }
        self._cut_next = asyncio.get_running_loop().create_future()
        return self._cut_next

    def received(self) -> list[int]:
        """Bytes each open connection has received from the target so far."""
        return list(self._received.values())

    def received_by_connection(self) -> dict[int, int]:
        """The same, by connection id."""
        return {id(w): n for w, n in self._received.items()}

    def stall(self, replies_only: bool = False) -> None:
        if not replies_only:
            self._flowing.clear()
        self._replying.clear()

    def resume(self) -> None:
        self._flowing.set()
        self._replying.set()

    def slow(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))
        self._received[writer] = 0
        self._pieces_sent[writer] = 0

        def close_both() -> None:
            for w in (writer, up_writer):
                w.close()

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_target: bool
        ) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)  # the fault itself, not a wait
                    await self._flowing.wait()  # a full stall holds everything
                    if from_target and self._pieces_sent.get(dst, 0) > 1:
                        await self._replying.wait()
                    if not from_target:
                        self._pieces_sent[writer] = self._pieces_sent.get(writer, 0) + 1
                        self.sent += len(data)
                    cut = self._cut_next
                    if from_target and cut is not None and not cut.done() and dst in self._cuttable:
                        half = max(1, len(data) // 2)
                        dst.write(data[:half])
                        await dst.drain()
                        cut.set_result(half)
                        close_both()
                        return
                    if from_target:
                        self._received[dst] = self._received.get(dst, 0) + len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        self._conns.difference_update((writer, up_writer))
        self._received.pop(writer, None)
        self._pieces_sent.pop(writer, None)
        self._cuttable.discard(writer)


async def proxied_storage(
    network: Network, config: GatewayConfig
) -> tuple[dict[str, Any], list[TcpProxy]]:
    """Config fields (for ``config.model_copy(update=…)``) that send the gateway's storage
    calls through proxies a test can cut, and those proxies, started: kubo's RPC API, and
    on the cluster backend (make test-scale) peer 0's REST API too, then the only storage
    the gateway is given (the cluster backend rides out any one kubo's loss)."""
    assert network.kubo is not None
    kubo = TcpProxy("127.0.0.1", int(network.kubo.api_url.rsplit(":", 1)[1]))
    await kubo.start()
    update: dict[str, Any] = {"kubo_api_url": f"http://127.0.0.1:{kubo.port}"}
    if config.cluster is None or network.cluster is None:
        return update, [kubo]
    rest = TcpProxy("127.0.0.1", network.cluster.peers[0].rest_port)
    await rest.start()
    update["cluster"] = config.cluster.model_copy(
        update={"rest_urls": [f"http://127.0.0.1:{rest.port}"], "kubo_api_urls": []}
    )
    return update, [kubo, rest]
