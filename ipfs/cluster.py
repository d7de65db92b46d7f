"""ClusterStore: the BlockStore of an IPFS Cluster, replicated across its peers.

Writes go through the cluster's REST API: ``POST /add`` imports the bytes with kubo's
settings (CIDv1, raw leaves, 256 KiB chunks: the same CID kubo would give) and puts the
blocks on every allocated peer before it answers, so an upload the gateway acknowledges
is already on ``replication.min`` peers or more. ``POST /pins/{cid}`` and
``DELETE /pins/{cid}`` pin and unpin cluster-wide. Any peer's REST API will do: the first
that answers is used.

Reads go to the peers' kubo RPC APIs directly (the cluster does not serve content), this
machine's first, each asked *offline*: a peer that lacks a block says so at once instead of
searching the network, and the next peer is asked. A read that breaks mid-stream resumes
at the same byte on the next peer. So a dead peer, or one whose kubo died, costs a refused
connection, not a failed download. Peers found unreachable are asked last for a while.

Errors are ``ipfs.errors``, as kubo's: every peer unreachable (or the cluster unable to
allocate enough peers) is IpfsUnavailable, so the gateway answers 503 + Retry-After.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from ipfs.errors import IpfsError, IpfsNotFound, IpfsUnavailable
from ipfs.kubo import KuboClient
from ipfs.store import BlockStore
from rest.observe import CallObserver, observed
from rest.session import LazySession

__all__ = ["ClusterStore", "PeerHealth", "Replication", "added_cid", "combined_error"]

T = TypeVar("T")

# A peer found unreachable is asked after the others for this long.
UNREACHABLE_COOLDOWN_S = 30.0
# What the cluster says when too few peers are up to place a pin: retry later.
_TOO_FEW_PEERS = "not enough peers to allocate"


@dataclass(frozen=True)
class Replication:
    """How many cluster peers pin each CID: at least ``min`` (or the pin fails), and up to
    ``max`` when that many are available."""

    min: int = 2
    max: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"replication needs 1 <= min <= max, got {self.min}..{self.max}")

    def query(self) -> dict[str, str]:
        """The cluster API's pin options for this factor."""
        return {"replication-min": str(self.min), "replication-max": str(self.max)}


@dataclass
class PeerHealth:
    """Which peers failed to answer lately; pure bookkeeping, the clock is passed in."""

    cooldown_s: float = UNREACHABLE_COOLDOWN_S
    clock: Callable[[], float] = time.monotonic
    _failed_at: dict[str, float] = field(default_factory=dict)

    def order(self, urls: Sequence[str]) -> list[str]:
        """``urls`` in their order, but those unreachable within the cooldown last."""
        now = self.clock()
        recent = {u for u, at in self._failed_at.items() if now - at < self.cooldown_s}
        return [u for u in urls if u not in recent] + [u for u in urls if u in recent]

    def unreachable(self, url: str) -> None:
        self._failed_at[url] = self.clock()

    def answered(self, url: str) -> None:
        self._failed_at.pop(url, None)


def combined_error(what: str, errors: Sequence[IpfsError]) -> IpfsError:
    """One error for a call every peer failed. An unreachable peer may hold the data, so
    any unreachable peer makes it IpfsUnavailable (retry later); only when every peer
    answered that it lacks the data is it IpfsNotFound."""
    if not errors:
        return IpfsUnavailable(f"{what}: no peers configured")
    summary = f"{what}: " + "; ".join(str(e) for e in errors)
    if any(isinstance(e, IpfsUnavailable) for e in errors):
        return IpfsUnavailable(summary)
    if all(isinstance(e, IpfsNotFound) for e in errors):
        return IpfsNotFound(summary)
    return IpfsError(summary)


def added_cid(body: bytes) -> str:
    """The root CID from a ``POST /add?stream-channels=false`` answer (a JSON array of
    AddedOutput, the root last)."""
    try:
        outputs = json.loads(body)
        return str(outputs[-1]["cid"])
    except (ValueError, LookupError, TypeError) as exc:
        raise IpfsError(f"cluster add: unexpected answer {body[:200]!r}") from exc


def cluster_error(call: str, status: int, body: bytes) -> IpfsError:
    """The ipfs error for a cluster REST answer that is not a success."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    if status >= 502 or _TOO_FEW_PEERS in message:
        return IpfsUnavailable(f"cluster {call}: HTTP {status} {message}")
    if status == 404:
        return IpfsNotFound(f"cluster {call}: {message}")
    return IpfsError(f"cluster {call}: HTTP {status} {message}")


class _Unreachable(IpfsUnavailable):
    """This peer's REST API did not answer: ask the next one."""


class _Peers:
    """What every view of one cluster shares: the HTTP sessions and peer health."""

    def __init__(
        self,
        rest_urls: Sequence[str],
        kubo_api_urls: Sequence[str],
        timeout_s: float,
        observe: CallObserver | None,
    ) -> None:
        if not rest_urls or not kubo_api_urls:
            raise ValueError("a cluster needs at least one REST URL and one kubo API URL")
        self.rest_urls = [u.rstrip("/") for u in rest_urls]
        self.kubos = {
            u.rstrip("/"): KuboClient(u, timeout_s, observe) for u in dict.fromkeys(kubo_api_urls)
        }
        self.observe = observe
        self.http = LazySession(aiohttp.ClientTimeout(total=timeout_s, sock_connect=5))
        self.rest_health = PeerHealth()
        self.kubo_health = PeerHealth()

    async def close(self) -> None:
        await self.http.close()
        for kubo in self.kubos.values():
            await kubo.close()


class ClusterStore:
    """An IPFS Cluster as a BlockStore; see the module docstring.

    ``rest_urls``: the cluster REST API of one or more peers (any will do).
    ``kubo_api_urls``: the kubo RPC API of each peer, this machine's first.
    ``replicated(r)`` is the same store pinning with another replication factor (a
    tenant's); it shares this one's connections."""

    def __init__(
        self,
        rest_urls: Sequence[str],
        kubo_api_urls: Sequence[str],
        replication: Replication | None = None,
        timeout_s: float = 60.0,
        observe: CallObserver | None = None,
    ) -> None:
        self._peers = _Peers(rest_urls, kubo_api_urls, timeout_s, observe)
        self.replication = replication or Replication()

    def replicated(self, replication: Replication) -> ClusterStore:
        view = copy.copy(self)  # shallow: the same _Peers
        view.replication = replication
        return view

    async def __aenter__(self) -> ClusterStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._peers.close()

    # -- the cluster REST API ------------------------------------------------------------

    async def _rest(
        self,
        call: str,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        data: Callable[[], aiohttp.FormData] | None = None,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes]:
        """One REST call, to the first peer that answers; (status, body)."""
        errors: list[IpfsError] = []
        peers = self._peers
        for url in peers.rest_health.order(peers.rest_urls):
            try:
                # The same call names as kubo's: the metrics read alike on either backend.
                with observed(peers.observe, call, (IpfsError,)):
                    status, body = await self._rest_once(
                        call, method, url + path, params, data, ok_statuses
                    )
            except _Unreachable as exc:
                peers.rest_health.unreachable(url)
                errors.append(exc)
                continue
            # Any other answer is the cluster's, whichever peer gave it (e.g. too few peers
            # up to place a pin): asking the next peer would get the same one.
            peers.rest_health.answered(url)
            return status, body
        raise combined_error(f"cluster {call}", errors)

    async def _rest_once(
        self,
        call: str,
        method: str,
        url: str,
        params: dict[str, str] | None,
        data: Callable[[], aiohttp.FormData] | None,
        ok_statuses: tuple[int, ...],
    ) -> tuple[int, bytes]:
        session = self._peers.http.get()
        try:
            async with session.request(
                method, url, params=params, data=data() if data else None
            ) as resp:
                body = await resp.read()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise _Unreachable(f"cluster peer {url} unreachable: {exc!r}") from exc
        if resp.status >= 502:  # a proxy in front of the peer: the peer is not there
            raise _Unreachable(f"cluster {call} at {url}: HTTP {resp.status}")
        if resp.status not in ok_statuses:
            raise cluster_error(call, resp.status, body)
        return resp.status, body

    def _pin_options(self) -> dict[str, str]:
        # The same options on add and pin: re-pinning with equal options is a no-op for the
        # cluster, while other options would re-allocate the pin.
        return self.replication.query() | {"name": "bitcache"}

    async def add(self, data: bytes, pin: bool = True) -> str:
        """Adds ``data`` through the cluster; pinned on ``replication`` peers unless
        ``pin`` is false (then only stored, and collectable)."""

        def form() -> aiohttp.FormData:  # a FormData is spent once sent: one per attempt
            f = aiohttp.FormData()
            f.add_field("file", data, filename="chunk", content_type="application/octet-stream")
            return f

        params = self._pin_options() | {
            "cid-version": "1",
            "stream-channels": "false",  # errors as an HTTP status, not a trailer
            "no-pin": "false" if pin else "true",
        }
        _, body = await self._rest("add", "POST", "/add", params, form)
        return added_cid(body)

    async def pin_add(self, cid: str) -> None:
        await self._rest("pin/add", "POST", f"/pins/{cid}", self._pin_options())

    async def pin_rm(self, cid: str) -> None:
        # 404: "pin is not part of the pinset", which is what was asked.
        await self._rest("pin/rm", "DELETE", f"/pins/{cid}", ok_statuses=(200, 404))

    async def pin_status(self, cid: str) -> dict[str, str]:
        """Each cluster peer's status for ``cid`` (peer id → "pinned", "pinning",
        "remote", "unpinned", "cluster_error", …), as the cluster reports it."""
        _, body = await self._rest("pin/status", "GET", f"/pins/{cid}")
        peer_map: dict[str, Any] = json.loads(body).get("peer_map") or {}
        return {peer: str(info.get("status", "")) for peer, info in peer_map.items()}

    async def allocation(self, cid: str) -> Replication | None:
        """The replication factor the cluster holds for ``cid``'s pin; None if unpinned."""
        try:
            _, body = await self._rest("allocations", "GET", f"/allocations/{cid}")
        except IpfsNotFound:
            return None
        pin = json.loads(body)
        return Replication(int(pin["replication_factor_min"]), int(pin["replication_factor_max"]))

    async def version(self) -> str:
        _, body = await self._rest("version", "GET", "/version")
        return f"ipfs-cluster {json.loads(body).get('version', '')}"

    # -- reads, from the peers' kubo -----------------------------------------------------

    def _readers(self) -> list[tuple[str, KuboClient]]:
        peers = self._peers
        return [(u, peers.kubos[u]) for u in peers.kubo_health.order(list(peers.kubos))]

    async def _first(self, what: str, call: Callable[[KuboClient], Awaitable[T]]) -> T:
        errors: list[IpfsError] = []
        for url, kubo in self._readers():
            try:
                result = await call(kubo)
            except IpfsError as exc:
                self._note(url, exc)
                errors.append(exc)
                continue
            self._peers.kubo_health.answered(url)
            return result
        raise combined_error(what, errors)

    def _note(self, url: str, exc: IpfsError) -> None:
        if isinstance(exc, IpfsUnavailable):
            self._peers.kubo_health.unreachable(url)

    async def cat(self, cid: str) -> bytes:
        return b"".join([part async for part in self.cat_stream(cid)])

    async def cat_stream(self, cid: str, block: int = 256 * 1024) -> AsyncIterator[bytes]:
        errors: list[IpfsError] = []
        sent = 0  # bytes already yielded: a later peer resumes from here
        for url, kubo in self._readers():
            parts = kubo.cat_stream(cid, block, offset=sent, offline=True)
            try:
                # Closed at once if our reader stops early, releasing that kubo's answer.
                async with contextlib.aclosing(parts):
                    async for part in parts:
                        sent += len(part)
                        yield part
            except IpfsError as exc:
                self._note(url, exc)
                errors.append(exc)
                continue
            self._peers.kubo_health.answered(url)
            return
        raise combined_error(f"cat {cid}", errors)

    async def stat_size(self, cid: str) -> int:
        return await self._first(f"stat {cid}", lambda kubo: kubo.stat_size(cid, offline=True))


# Checked by mypy: the cluster is a BlockStore.
_: type[BlockStore] = ClusterStore
