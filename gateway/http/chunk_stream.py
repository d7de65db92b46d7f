"""Streaming a stored chunk from IPFS to the client, never serving a wrong size as a 200.

The chunk used to be read whole from kubo, joined, checked and then sent: a copy per chunk
and up to a chunk of memory per request in flight (10 downloads x 8 requests x 1 MiB, twice
over). Now each piece goes out as it comes in, under the Content-Length the database
records, with one piece held back: the last bytes are sent only once kubo's stream has
ended at exactly the recorded size. So:

- storage that fails or returns the wrong size before anything was sent is a 502/503 problem,
  as before (the middleware maps IpfsError; a size mismatch is ``storage-corrupt``);
- once the headers are out, the connection is cut instead: the client receives fewer bytes
  than the Content-Length it was promised, which HTTP clients report as an error, so a
  truncated (or overlong) block is never taken for a complete chunk.

From a kubo node reached over plain HTTP, to a client on plain TCP (on Linux), the bytes
do not pass through Python at all: kubo's answer comes as a bare socket
(ipfs/kubo_socket.py) and all but its last ``_HOLD`` bytes are spliced into the client's
socket (gateway/http/splice.py); those last bytes are read, kubo's end of stream is
checked to come exactly at the recorded size, and only then are they sent, so the rules
above hold the same. Any other store (IPFS Cluster, a fake) or connection (TLS) streams
as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence

from aiohttp import web

from gateway.http.problems import Problem
from gateway.http.splice import Splicer, spliceable, target
from ipfs.errors import IpfsError, IpfsUnavailable
from ipfs.kubo import KuboClient
from ipfs.kubo_socket import CatSocket, readable
from ipfs.store import BlockStore

__all__ = ["BODY_BYTES_SENT", "discard_cat", "early_cat", "stream_block", "stream_blocks"]

log = logging.getLogger("bitcache.gateway")

# The body bytes a streamed answer sent (its headers excluded, a cut-off counted as far as
# it went), for whoever accounts for them after the handler: the metrics middleware.
BODY_BYTES_SENT = web.RequestKey("body_bytes_sent", int)


# The tail of a spliced chunk read into Python, sent once kubo's stream has ended exactly at
# the recorded size.
_HOLD = 64 << 10
_PEEK = socket.MSG_PEEK


class _WrongSize(Exception):
    pass


def _corrupt(detail: str) -> Problem:
    return Problem(502, "storage-corrupt", "Storage returned the wrong size", detail)


def early_cat(request: web.Request, store: BlockStore, cid: str) -> asyncio.Task[CatSocket] | None:
    """Starts opening kubo's cat of ``cid`` now if :func:`stream_block` will splice it, so
    that what the handler awaits meanwhile (a credit debit) overlaps the connection; give
    the task to stream_block, or to :func:`discard_cat` if the answer will not be the
    chunk."""
    if request.method != "GET" or not (isinstance(store, KuboClient) and store.splices):
        return None
    return store.start_cat(cid) if spliceable(request) else None


def discard_cat(cat: asyncio.Task[CatSocket] | None) -> None:
    """Stops an :func:`early_cat` and closes its socket, whenever it ends."""
    if cat is not None:
        cat.cancel()  # nothing if it is done
        cat.add_done_callback(_close_opened)


def _close_opened(cat: asyncio.Task[CatSocket]) -> None:
    if not cat.cancelled() and cat.exception() is None:  # exception(): retrieved, not logged
        cat.result().close()


async def stream_block(
    request: web.Request,
    store: BlockStore,
    cid: str,
    size: int,
    headers: Mapping[str, str],
    cat: asyncio.Task[CatSocket] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send ``cid``, which must be ``size`` bytes, as the response; return it and the bytes
    sent (fewer than ``size`` if the client left or the stream was cut off). ``cat``: the
    :func:`early_cat` of ``cid``, if one was started."""
    return await stream_blocks(request, store, [(cid, size)], headers, cat)


async def stream_blocks(
    request: web.Request,
    store: BlockStore,
    blocks: Sequence[tuple[str, int]],
    headers: Mapping[str, str],
    cat: asyncio.Task[CatSocket] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send ``blocks`` (CID, recorded size) one after another as one response, under the
    rules above for each: a failure before the first byte is a problem answer, after it a
    cut-off. ``cat``: the :func:`early_cat` of the first block, if one was started."""
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = sum(size for _, size in blocks)
    if request.method == "HEAD":
        discard_cat(cat)
        await response.prepare(request)
        await response.write_eof()
        request[BODY_BYTES_SENT] = 0
        return response, 0
    if isinstance(store, KuboClient) and store.splices:
        with target(request) as dst:
            if dst is not None:
                return await _stream_spliced(request, response, store, blocks, dst, cat)
    discard_cat(cat)  # the connection can no longer take a splice: stream it instead
    done = _Sent()
    cid, size = blocks[0]
    try:
        for cid, size in blocks:
            await _stream_pieces(request, response, store, cid, size, done)
        await response.write_eof()
    except (_WrongSize, IpfsError) as exc:
        _block_failed(request, response, cid, done.count, exc)
    except ConnectionError:
        # The client went away; nothing to answer. aiohttp closes the connection.
        log.info("client left after %d bytes of the answer, in %s", done.count, cid)
    finally:
        request[BODY_BYTES_SENT] = done.count
    return response, done.count


class _Sent:
    """The body bytes sent so far, kept by the loop that sends them (an exception leaves
    it where it got to)."""

    count = 0


async def _stream_pieces(
    request: web.Request,
    response: web.StreamResponse,
    store: BlockStore,
    cid: str,
    size: int,
    done: _Sent,
) -> None:
    """One block, as kubo's pieces come, its last piece held until the stream proves the
    recorded size; the response is prepared at the first byte sent."""
    received = 0
    held: bytes | None = None  # the last piece, sent once the stream proves its size
    pieces = store.cat_stream(cid)
    try:
        async for piece in pieces:
            received += len(piece)
            if received > size:
                raise _WrongSize(f"more than the {size} bytes recorded")
            if held is not None:
                if not response.prepared:
                    await response.prepare(request)
                await response.write(held)
                done.count += len(held)
            held = piece
        if received != size:
            raise _WrongSize(f"{received} bytes, {size} recorded")
        if not response.prepared:
            await response.prepare(request)
        if held:
            await response.write(held)
            done.count += len(held)
    finally:
        # Left early (error, client gone): release kubo's answer now, not when collected.
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()


async def _stream_spliced(
    request: web.Request,
    response: web.StreamResponse,
    store: KuboClient,
    blocks: Sequence[tuple[str, int]],
    dst: int,
    cat: asyncio.Task[CatSocket] | None,
) -> tuple[web.StreamResponse, int]:
    """stream_blocks from kubo's bare sockets, spliced into the client's (``dst``); the
    next block's connection opens while one is relayed."""
    splicer = Splicer(request, dst)
    pending = cat  # a connection opening, not yet handed to cat_socket
    cid, size = blocks[0]
    try:
        for k, (cid, size) in enumerate(blocks):
            opened, pending = pending, None
            if k + 1 < len(blocks):
                pending = store.start_cat(blocks[k + 1][0])
            async with store.cat_socket(cid, opened=opened) as body:
                try:
                    await _relay(request, response, body, size, splicer)
                except TimeoutError:
                    raise IpfsUnavailable(
                        f"kubo cat {cid}: no bytes for {body.read_timeout_s} s"
                    ) from None
        await response.write_eof()
    except (_WrongSize, IpfsError) as exc:
        _block_failed(request, response, cid, splicer.sent, exc)
    except ConnectionError:
        log.info("client left after %d bytes of the answer, in %s", splicer.sent, cid)
    except OSError as exc:  # splice refused (not expected once the checks passed)
        log.error("chunk %s cut off after %d bytes of the answer: %r", cid, splicer.sent, exc)
        _cut_off(request, response)
    finally:
        discard_cat(pending)
        request[BODY_BYTES_SENT] = splicer.sent
    return response, splicer.sent


async def _relay(
    request: web.Request,
    response: web.StreamResponse,
    body: CatSocket,
    size: int,
    splicer: Splicer,
) -> None:
    if body.length is not None and body.length != size:
        raise _WrongSize(f"kubo announces {body.length} bytes, {size} recorded")
    # The first bytes (or kubo's end) before the head goes out: storage that fails before
    # sending anything is still an ordinary problem answer.
    await readable(body.sock, body.read_timeout_s)
    if size and not body.sock.recv(1, _PEEK):
        raise _WrongSize(f"0 bytes, {size} recorded")
    await response.prepare(request)  # sends the head at the first block; then nothing
    await splicer.flushed()  # the head, or the last block's tail, before the splice
    hold = min(size, _HOLD)
    moved = await splicer.move(body.sock, size - hold, body.read_timeout_s)
    if moved < size - hold:
        raise _WrongSize(f"{moved} bytes, {size} recorded")
    tail = await _read_tail(body, hold)
    if len(tail) != hold:
        raise _WrongSize(f"{size - hold + len(tail)} bytes, {size} recorded")
    if tail:
        await response.write(tail)
        splicer.sent += len(tail)


async def _read_tail(body: CatSocket, hold: int) -> bytes:
    """What is left in ``body`` up to its end, at most ``hold`` + 1 bytes (one more than
    expected shows an overlong block without reading all of it)."""
    loop = asyncio.get_running_loop()
    tail = bytearray()
    async with asyncio.timeout(body.read_timeout_s):
        while len(tail) <= hold:
            piece = await loop.sock_recv(body.sock, hold + 1 - len(tail))
            if not piece:
                break
            tail += piece
    return bytes(tail)


def _block_failed(
    request: web.Request,
    response: web.StreamResponse,
    cid: str,
    sent: int,
    exc: _WrongSize | IpfsError,
) -> None:
    """A block of the wrong size, or storage failing: an ordinary problem answer while
    nothing was sent, else the connection cut short of its Content-Length."""
    if not response.prepared:
        if isinstance(exc, _WrongSize):
            raise _corrupt(f"block {cid}: {exc}") from None
        raise exc
    log.error("chunk %s cut off after %d bytes of the answer: %s", cid, sent, exc)
    _cut_off(request, response)


def _cut_off(request: web.Request, response: web.StreamResponse) -> None:
    """End the connection short of the promised Content-Length (bytes already buffered are
    still delivered, then the peer sees the body end early)."""
    response.force_close()
    if request.transport is not None:
        request.transport.close()
