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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from gateway.http.problems import Problem
from ipfs.errors import IpfsError
from ipfs.store import BlockStore

__all__ = ["BODY_BYTES_SENT", "stream_block"]

log = logging.getLogger("bitcache.gateway")

# The body bytes a streamed answer sent (its headers excluded, a cut-off counted as far as
# it went), for whoever accounts for them after the handler: the metrics middleware.
BODY_BYTES_SENT = web.RequestKey("body_bytes_sent", int)


class _WrongSize(Exception):
    pass


def _corrupt(detail: str) -> Problem:
    return Problem(502, "storage-corrupt", "Storage returned the wrong size", detail)


async def stream_block(
    request: web.Request,
    store: BlockStore,
    cid: str,
    size: int,
    headers: Mapping[str, str],
) -> tuple[web.StreamResponse, int]:
    """Send ``cid``, which must be ``size`` bytes, as the response; return it and the bytes
    sent (fewer than ``size`` if the client left or the stream was cut off)."""
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = size
    if request.method == "HEAD":
        await response.prepare(request)
        await response.write_eof()
        request[BODY_BYTES_SENT] = 0
        return response, 0
    received = sent = 0
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
                sent += len(held)
            held = piece
        if received != size:
            raise _WrongSize(f"{received} bytes, {size} recorded")
        if not response.prepared:
            await response.prepare(request)
        if held:
            await response.write(held)
            sent += len(held)
        await response.write_eof()
    except (_WrongSize, IpfsError) as exc:
        if not response.prepared:  # nothing sent: an ordinary problem answer
            if isinstance(exc, _WrongSize):
                raise _corrupt(f"block {cid}: {exc}") from None
            raise
        log.error("chunk %s cut off after %d of %d bytes: %s", cid, sent, size, exc)
        _cut_off(request, response)
    except ConnectionError:
        # The client went away; nothing to answer. aiohttp closes the connection.
        log.info("client left after %d of %d bytes of %s", sent, size, cid)
    finally:
        # Left early (error, client gone): release kubo's answer now, not when collected.
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
        request[BODY_BYTES_SENT] = sent
    return response, sent


def _cut_off(request: web.Request, response: web.StreamResponse) -> None:
    """End the connection short of the promised Content-Length (bytes already buffered are
    still delivered, then the peer sees the body end early)."""
    response.force_close()
    if request.transport is not None:
        request.transport.close()
