"""kubo's RPC over a bare HTTP/1.0 socket: ``cat`` as a socket holding exactly the
content, for a caller to splice, and a POST whose request goes out in one system call.

Over HTTP/1.1 kubo sends a cat in chunked encoding, in 4 KiB frames: 256 frames a MiB,
each one a call into aiohttp's parser and its stream reader before the gateway can pass the
bytes on, which cost the gateway more CPU than sending them. Asked over HTTP/1.0, kubo
cannot frame the body: it sends the content as it is and closes the connection after the
last byte (a failure after the headers shows as a body shorter than its announced
``X-Content-Length``). So once its head has been read, the socket holds nothing but the
content, and the gateway moves it to its client with splice(2)
(gateway/http/splice.py), never copying it into Python.

An ``add`` through aiohttp cost the gateway more than its bytes: the request head, the
multipart part head, the chunk, the part's end and the closing boundary went out as
several writes, each a system call that wakes kubo, and the answer came back chunked.
:func:`post` sends the head, the body's pieces and its end with one ``sendmsg`` (the
chunk is not copied), and reads the unframed answer to kubo's close.

One TCP connection per call (HTTP/1.0 has no keep-alive); on loopback that costs less than
the framing did. Plain ``http://`` API addresses only: ``KuboClient`` uses aiohttp
otherwise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from ipfs.errors import IpfsError, IpfsUnavailable, kubo_error

__all__ = ["CatSocket", "open_cat", "post", "readable", "supported"]

_HEAD_LIMIT = 64 << 10
_ERROR_LIMIT = 64 << 10


@dataclass
class CatSocket:
    """A cat whose head has been read: ``sock`` (non-blocking) holds the content from here
    to its end, then EOF. Close it when done."""

    sock: socket.socket
    length: int | None  # X-Content-Length: what kubo announced, if it did
    read_timeout_s: float  # longest wait for the next bytes (a stalled kubo)
    on_close: Callable[[], None] | None = None  # called once, by the first close()

    def close(self) -> None:
        self.sock.close()
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()


def supported(api_url: str) -> bool:
    """Whether ``open_cat`` can reach this API (plain HTTP)."""
    parts = urlsplit(api_url)
    return parts.scheme == "http" and bool(parts.hostname)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def readable(sock: socket.socket, timeout_s: float | None) -> None:
    """Until ``sock`` has bytes (or EOF) to read; TimeoutError after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, _wake, waiter)
    try:
        async with asyncio.timeout(timeout_s):
            await waiter
    finally:
        loop.remove_reader(fd)


async def _addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """(family, type, proto, name, address) to try; an IP address needs no resolver (whose
    thread hop would cost more than the connection, once per chunk)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        return list(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return [(family, socket.SOCK_STREAM, 0, "", (host, port))]


async def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    async with asyncio.timeout(timeout_s):
        for family, kind, proto, _name, address in await _addresses(host, port):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            return sock
    raise errors[0] if errors else OSError(f"no address for {host}")


async def _read_head(sock: socket.socket, timeout_s: float) -> bytes:
    """The response head, up to and including its blank line, and not one byte more: the
    bytes after it are peeked at, never taken, so the socket then holds only the body."""
    head = bytearray()
    while True:
        await readable(sock, timeout_s)
        peeked = sock.recv(_HEAD_LIMIT, socket.MSG_PEEK)
        if not peeked:
            raise IpfsUnavailable("kubo closed the connection before its answer's head")
        end = (bytes(head[-3:]) + peeked).find(b"\r\n\r\n")
        if end >= 0:
            take = end + 4 - min(len(head), 3)
            while take:  # already queued (peeked), so this does not wait
                piece = sock.recv(take)
                head += piece
                take -= len(piece)
            return bytes(head)
        head += sock.recv(len(peeked))  # all head bytes: take them, wait for more
        if len(head) > _HEAD_LIMIT:
            raise IpfsError("kubo's answer head is too long")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        raise IpfsError(f"kubo answered something other than HTTP: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status[1]), headers


async def _read_to_end(sock: socket.socket, limit: int, timeout_s: float) -> bytes:
    loop = asyncio.get_running_loop()
    body = bytearray()
    async with asyncio.timeout(timeout_s):
        while len(body) < limit:
            piece = await loop.sock_recv(sock, limit - len(body))
            if not piece:
                break
            body += piece
    return bytes(body)


async def _send_all(sock: socket.socket, pieces: list[bytes | memoryview]) -> None:
    """``pieces`` in order: one ``sendmsg`` (a gathered write), then, for whatever the
    socket's buffer did not take, plain sends as it drains."""
    loop = asyncio.get_running_loop()
    try:
        sent = sock.sendmsg(pieces)
    except BlockingIOError:
        sent = 0
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        await loop.sock_sendall(sock, memoryview(piece)[sent:])
        sent = 0


def _url_parts(api_url: str) -> tuple[str, int, str, str]:
    """(host, port, path prefix, Host header) of a plain http:// API address."""
    parts = urlsplit(api_url)
    if not supported(api_url) or parts.hostname is None:
        raise ValueError(f"not a plain http:// API address: {api_url}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/"), parts.netloc


async def post(
    api_url: str,
    command: str,
    params: dict[str, str],
    body: list[bytes | memoryview],
    content_type: str,
    *,
    connect_timeout_s: float = 5.0,
    timeout_s: float = 60.0,
    limit: int = 1 << 20,
) -> tuple[int, bytes]:
    """``POST /api/v0/<command>`` over HTTP/1.0 with ``body`` (its pieces in order, sent
    as they are): the status and the answer's body, read to kubo's close (at most
    ``limit`` bytes). kubo unreachable, silent or cut off is IpfsUnavailable."""
    host, port, prefix, netloc = _url_parts(api_url)
    length = sum(len(piece) for piece in body)
    head = (
        f"POST {prefix}/api/v0/{command}?{urlencode(params)} HTTP/1.0\r\nHost: {netloc}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode("latin-1")
    try:
        sock = await _connect(host, port, connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise IpfsUnavailable(f"kubo at {api_url} unreachable: {exc!r}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            await _send_all(sock, [head, *body])
            answer = await _read_to_end(sock, limit + _HEAD_LIMIT, timeout_s)
    except (OSError, TimeoutError) as exc:
        raise IpfsUnavailable(f"kubo at {api_url} unreachable: {exc!r}") from exc
    finally:
        sock.close()
    head_end = answer.find(b"\r\n\r\n")
    if head_end < 0:
        raise IpfsUnavailable(f"kubo {command}: the answer ended within its head")
    status, _headers = _parse_head(answer[: head_end + 4])
    return status, answer[head_end + 4 :]


async def open_cat(
    api_url: str,
    cid: str,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    offline: bool = False,
) -> CatSocket:
    """``POST /api/v0/cat?arg=<cid>`` over HTTP/1.0, its head read and checked: a 200's
    socket, positioned at the content's first byte. An error answer raises what
    ``KuboClient`` raises for it; kubo unreachable or silent is IpfsUnavailable."""
    host, port, prefix, netloc = _url_parts(api_url)
    query = urlencode({"arg": cid} | ({"offline": "true"} if offline else {}))
    request = (
        f"POST {prefix}/api/v0/cat?{query} HTTP/1.0\r\nHost: {netloc}\r\nContent-Length: 0\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    try:
        sock = await _connect(host, port, connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise IpfsUnavailable(f"kubo at {api_url} unreachable: {exc!r}") from exc
    try:
        async with asyncio.timeout(read_timeout_s):
            await loop.sock_sendall(sock, request.encode("ascii"))
        status, headers = _parse_head(await _read_head(sock, read_timeout_s))
        if status != 200:
            raise kubo_error("cat", status, await _read_to_end(sock, _ERROR_LIMIT, read_timeout_s))
        announced = headers.get("x-content-length", "")
        length = int(announced) if announced.isdigit() else None
        return CatSocket(sock, length, read_timeout_s)
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise IpfsUnavailable(f"kubo at {api_url} unreachable: {exc!r}") from exc
    except BaseException:
        sock.close()
        raise
