"""client.api upload/download engine against a fake gateway (docs/api.md, minimally).

The fake mints real L402 macaroons (l402/) and bech32-valid invoices for the
announced amount; the fake payer returns the invoice's preimage. End-to-end runs against real
LND and kubo live in tests/integration.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

import l402
from client import config as dl_config
from client import download as dl
from client import files as dl_files
from client.api import BitcacheClient
from client.cli import main
from client.config import ClientConfig
from client.errors import ClientError, GatewayError, PaymentError, PaymentRefused
from client.payer import LndPayer
from client.progress import Progress
from l402 import parse_challenge, token_scope
from l402.macaroon import add_caveat, mint, to_base64
from lightning.bolt11 import invoice_amount_msat
from lightning.errors import PaymentFailed
from lightning.lnd import LndRestClient
from lightning.models import Payment
from storage.capability import ShareLink
from storage.crypto import FileHeader, sealed_chunk_size
from storage.errors import ChunkAuthError, WrongKeyError

CHUNK = 4096
N_CHUNKS = 20
PRICE = 2_000
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


# --- a bech32-valid invoice for a given amount ------------------------------------------------


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            chk ^= g if (top >> i) & 1 else 0
    return chk


def make_invoice(amount_msat: int, payment_hash: bytes) -> str:
    """Regtest invoice envelope: right amount and checksum; its signature is not real."""
    for unit, factor in (("m", 10**8), ("u", 10**5), ("n", 100)):
        if amount_msat % factor == 0:
            amount = f"{amount_msat // factor}{unit}"
            break
    else:
        amount = f"{amount_msat * 10}p"
    hrp = "lnbcrt" + amount
    bits = int.from_bytes(payment_hash, "big") << 4  # 256 bits -> 52 groups of 5
    data = [7] * 7 + [(bits >> 5 * (51 - i)) & 31 for i in range(52)] + [0] * 104
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    mod = _polymod([*expanded, *data, 0, 0, 0, 0, 0, 0]) ^ 1
    data += [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data)


# --- the fake gateway -------------------------------------------------------------------------


@dataclass
class FakeFile:
    header: dict[str, Any]
    manifest: str
    price: int
    count: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    complete: bool = False


def problem(
    status: int, title: str, detail: str, headers: list[tuple[str, str]] | None = None, **extra: Any
) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    resp = web.json_response(body, status=status, content_type="application/problem+json")
    for name, value in headers or []:
        resp.headers.add(name, value)
    return resp


class FakeGateway:
    def __init__(self) -> None:
        self.files: dict[str, FakeFile] = {}
        self.root_key = os.urandom(32)
        self.preimages: dict[str, bytes] = {}
        self.challenges: list[tuple[int, int]] = []  # (first, count) sold to the purchaser
        self.refusals: list[str] = []
        self.served: list[int] = []
        self.puts: list[int] = []
        self.max_range = 1_000
        self.ttl = 3_600
        self.clock_offset = 0
        # Fault injection.
        self.fail_gets_after: int | None = None
        self.fail_puts_after: int | None = None
        self.expire_after_served: int | None = None
        self.tamper: set[int] = set()
        self.resize: dict[int, int] = {}  # chunk index → bytes added (or cut, if negative)
        self.overcharge_msat = 0
        self.advertised_price: int | None = None
        self.unavailable: int = 0  # answer this many next requests with 503
        self.runs = True  # answers GET /v1/files/{id}/chunks?first=&last= (else 404)
        self.runs_served: list[tuple[int, int]] = []  # (first, last) of each run asked for

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._flaky])
        app.router.add_post("/v1/files", self.create)
        app.router.add_get("/v1/files/{id}", self.state)
        app.router.add_put("/v1/files/{id}/chunks/{index}", self.put_chunk)
        app.router.add_post("/v1/files/{id}/complete", self.complete)
        app.router.add_get("/v1/files/{id}/chunks/{index}", self.get_chunk)
        app.router.add_get("/v1/files/{id}/chunks", self.get_run)
        return app

    @web.middleware
    async def _flaky(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.unavailable > 0:
            self.unavailable -= 1
            return problem(503, "Unavailable", "kubo down", [("Retry-After", "0")])
        return cast(web.StreamResponse, await handler(request))

    def _state(self, fid: str, f: FakeFile) -> dict[str, Any]:
        return {
            "file_id": fid,
            "state": "complete" if f.complete else "uploading",
            "header": f.header,
            "manifest": f.manifest,
            "chunk_count": f.count,
            "price_msat": f.price,
            "chunks_present": len(f.chunks),
            "missing": [i for i in range(f.count) if i not in f.chunks][:1000],
            "link_base": f"/f/{fid}",
        }

    def _file(self, request: web.Request) -> tuple[str, FakeFile]:
        fid = request.match_info["id"]
        if fid not in self.files:
            raise web.HTTPNotFound()
        return fid, self.files[fid]

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        header = FileHeader.from_json_dict(body["header"])
        fid = body["header"]["file_id"]
        if fid in self.files:
            f = self.files[fid]
            if (f.header, f.manifest) != (body["header"], body["manifest"]):
                return problem(409, "Conflict", "different header")
            return web.json_response(self._state(fid, f), status=200)
        price = body.get("price_msat", PRICE)
        f = FakeFile(body["header"], body["manifest"], price, header.chunk_count)
        self.files[fid] = f
        return web.json_response(self._state(fid, f), status=201)

    async def state(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.files:
            return problem(404, "Not found", f"no file {request.match_info['id']}")
        return web.json_response(self._state(*self._file(request)))

    async def put_chunk(self, request: web.Request) -> web.Response:
        _, f = self._file(request)
        index = int(request.match_info["index"])
        data = await request.read()
        h = FileHeader.from_json_dict(f.header)
        if len(data) != sealed_chunk_size(index, h.plaintext_size, h.chunk_size):
            return problem(422, "Wrong chunk size", "wrong size")
        if self.fail_puts_after is not None and len(self.puts) >= self.fail_puts_after:
            return problem(500, "Internal error", "disk on fire")
        if index in f.chunks:
            return web.json_response(
                {"index": index}, status=200 if f.chunks[index] == data else 409
            )
        f.chunks[index] = data
        self.puts.append(index)
        return web.json_response({"index": index, "cid": "bafy"}, status=201)

    async def complete(self, request: web.Request) -> web.Response:
        fid, f = self._file(request)
        missing = [i for i in range(f.count) if i not in f.chunks]
        if missing:
            return problem(409, "Conflict", "incomplete", missing=missing[:1000])
        f.complete = True
        return web.json_response(self._state(fid, f))

    def _challenge(
        self, fid: str, f: FakeFile, index: int, count: int, detail: str
    ) -> web.Response:
        count = max(1, min(count, self.max_range, f.count - index))
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).digest()
        invoice = make_invoice(f.price * count + self.overcharge_msat, payment_hash)
        self.preimages[invoice] = preimage
        valid_until = int(time.time()) + self.clock_offset + self.ttl
        mac = mint(self.root_key, l402.TokenId(0, payment_hash, os.urandom(32)).encode())
        for caveat in l402.build_caveats(fid, index, index + count - 1, valid_until):
            mac = add_caveat(mac, caveat.encode())
        macaroon = to_base64(mac)
        return problem(
            402,
            "Payment required",
            detail,
            [("WWW-Authenticate", v) for v in l402.format_challenge(macaroon, invoice)],
            price_msat=self.advertised_price if self.advertised_price is not None else f.price,
            amount_msat=f.price * count,
            first=index,
            count=count,
            valid_until=valid_until,
            invoice=invoice,
            macaroon=macaroon,
        )

    async def get_chunk(self, request: web.Request) -> web.Response:
        fid, f = self._file(request)
        index = int(request.match_info["index"])
        if f.price > 0:
            auth = request.headers.getall("Authorization", [])
            if not auth:
                self.challenges.append((index, int(request.query.get("count", "1"))))
                count = int(request.query.get("count", "1"))
                return self._challenge(fid, f, index, count, "pay first")
            try:
                credential = l402.parse_authorization(auth)
                now = int(time.time()) + self.clock_offset
                l402.verify_credential(
                    credential, self.root_key, l402.AccessRequest(fid, index, now)
                )
            except l402.L402Error as exc:
                self.refusals.append(str(exc))
                return self._challenge(fid, f, index, 1, f"token refused: {exc}")
        data = self._serve(f, index)
        if data is None:
            return problem(500, "Internal error", "storage exploded")
        return web.Response(body=data, content_type="application/octet-stream")

    def _serve(self, f: FakeFile, index: int) -> bytes | None:
        """Chunk ``index`` as served, faults injected; None: storage failed."""
        if self.fail_gets_after is not None and len(self.served) >= self.fail_gets_after:
            return None
        data = f.chunks[index]
        if index in self.tamper:
            data = data[:50] + bytes([data[50] ^ 1]) + data[51:]
        if index in self.resize:
            delta = self.resize[index]
            data = data + os.urandom(delta) if delta > 0 else data[:delta]
        self.served.append(index)
        if self.expire_after_served is not None and len(self.served) == self.expire_after_served:
            self.clock_offset += 100_000  # every token sold so far is now expired
        return data

    async def get_run(self, request: web.Request) -> web.Response:
        first, last = int(request.query["first"]), int(request.query["last"])
        self.runs_served.append((first, last))
        if not self.runs:
            raise web.HTTPNotFound()  # a gateway from before runs
        fid, f = self._file(request)
        if f.price > 0:
            auth = request.headers.getall("Authorization", [])
            if not auth:
                return self._challenge(fid, f, first, last - first + 1, "pay first")
            try:
                credential = l402.parse_authorization(auth)
                now = int(time.time()) + self.clock_offset
                for index in (first, last):
                    l402.verify_credential(
                        credential, self.root_key, l402.AccessRequest(fid, index, now)
                    )
            except l402.L402Error as exc:
                self.refusals.append(str(exc))
                return self._challenge(fid, f, first, 1, f"token refused: {exc}")
        parts = [self._serve(f, index) for index in range(first, last + 1)]
        if any(part is None for part in parts):
            return problem(500, "Internal error", "storage exploded")
        body = b"".join(part for part in parts if part is not None)
        return web.Response(body=body, content_type="application/octet-stream")


class FakePayer:
    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.calls: list[tuple[str, int]] = []
        self.fees_msat = 0

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        self.calls.append((bolt11, expected_msat))
        await asyncio.sleep(0.001)  # a payment takes a moment; fetchers run meanwhile
        self.fees_msat += 1
        return self.gateway.preimages[bolt11]

    @property
    def paid_msat(self) -> int:
        return sum(expected for _, expected in self.calls)


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Env:
    gateway: FakeGateway
    url: str
    payer: FakePayer
    tmp: Path

    def client(self, payer: bool = True, **overrides: Any) -> BitcacheClient:
        cfg = ClientConfig(gateway_url=self.url, **overrides)
        return BitcacheClient(
            cfg,
            payer=self.payer if payer else None,
            cache_dir=self.tmp / "cache",
            retry_delay_s=0.001,
        )

    def source(self, size: int = CHUNK * (N_CHUNKS - 1) + 1234, name: str = "data.bin") -> Path:
        path = self.tmp / "src" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(size))
        return path

    async def upload(self, path: Path, price: int | None = PRICE) -> ShareLink:
        async with self.client() as client:
            return await client.upload(path, price_msat=price, progress=False, chunk_size=CHUNK)

    def out_dir(self) -> Path:
        out = self.tmp / "out"
        out.mkdir(exist_ok=True)
        return out


@pytest.fixture
async def env(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Env]:
    gateway = FakeGateway()
    server = await aiohttp_server(gateway.app())
    yield Env(gateway, str(server.make_url("")).rstrip("/"), FakePayer(gateway), tmp_path)


# --- tests ------------------------------------------------------------------------------------


async def test_paid_round_trip(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    assert link.gateway == env.url
    assert list((env.tmp / "cache" / "uploads").iterdir()) == []  # state removed when done

    async with env.client() as client:
        info = await client.info(link.to_url())
        assert (info.name, info.size, info.chunk_count) == ("data.bin", src.stat().st_size, 20)
        assert info.media_type == "application/octet-stream" and info.state == "complete"
        assert env.payer.calls == []  # info is free
        result = await client.download(link, out=env.out_dir(), progress=False)

    assert result.path == env.out_dir() / "data.bin"
    assert result.path.read_bytes() == src.read_bytes()
    assert (result.size, result.chunks, result.chunks_bought) == (src.stat().st_size, 20, 20)
    assert result.paid_msat == env.payer.paid_msat == PRICE * N_CHUNKS
    assert result.fees_msat == len(env.payer.calls)
    for invoice, expected in env.payer.calls:
        assert invoice_amount_msat(invoice) == expected
    # Ranges grow fourfold from one chunk as they are taken, so payment stays ahead of the
    # fetchers; with several purchasers they may arrive out of order.
    assert sorted(env.gateway.challenges) == [(0, 1), (1, 4), (5, 15)]
    assert sorted(env.gateway.served) == list(range(N_CHUNKS))  # each chunk fetched once
    assert sorted(p.name for p in env.out_dir().iterdir()) == ["data.bin"]  # no .part left


async def test_ranges_capped_by_client_and_clipped_by_gateway(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    async with env.client(max_range_chunks=4) as client:
        await client.download(link, out=env.tmp / "a.bin", progress=False)
    # Several purchasers: the ranges may arrive out of order, so they are compared by start.
    assert sorted(env.gateway.challenges) == [(0, 1), (1, 4), (5, 4), (9, 4), (13, 4), (17, 3)]

    env.gateway.challenges.clear()
    env.gateway.max_range = 3  # the gateway sells less than asked: the rest is bought later
    async with env.client() as client:
        result = await client.download(link, out=env.tmp / "b.bin", progress=False)
    assert (env.tmp / "b.bin").read_bytes() == src.read_bytes()
    assert result.chunks_bought == N_CHUNKS and result.paid_msat == PRICE * N_CHUNKS


async def test_free_file_needs_no_payer(env: Env) -> None:
    src = env.source(size=3 * CHUNK)
    link = await env.upload(src, price=0)
    async with env.client(payer=False) as client:
        result = await client.download(link, out=env.tmp / "free.bin", progress=False)
    assert result.path.read_bytes() == src.read_bytes()
    assert (result.paid_msat, result.chunks_bought) == (0, 0)
    assert env.gateway.challenges == []


async def test_empty_file(env: Env) -> None:
    src = env.source(size=0, name="empty.txt")
    link = await env.upload(src)
    async with env.client() as client:
        result = await client.download(link, out=env.out_dir(), progress=False)
    assert result.path.read_bytes() == b""
    assert result.paid_msat == PRICE  # an empty file is one (empty) chunk


async def test_interrupted_download_resumes_without_paying_twice(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    out = env.tmp / "resumed.bin"
    env.gateway.fail_gets_after = 5
    async with env.client() as client:
        with pytest.raises(GatewayError, match="storage exploded"):
            await client.download(link, out=out, progress=False)
    assert not out.exists()
    sidecar = json.loads(Path(f"{out}.part.json").read_text())
    assert stat.S_IMODE(Path(f"{out}.part.json").stat().st_mode) == 0o600
    done = {i for first, last in sidecar["done"] for i in range(first, last + 1)}
    assert done and sidecar["tokens"]
    paid_first = env.payer.paid_msat
    # Purchasers run concurrently: an interruption can land between a challenge and its
    # payment, so count the challenges themselves rather than the payer's calls.
    challenges_first = len(env.gateway.challenges)

    env.gateway.fail_gets_after = None
    env.gateway.served.clear()
    async with env.client() as client:
        result = await client.download(link, out=out, progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert not Path(f"{out}.part").exists() and not Path(f"{out}.part.json").exists()
    # Done chunks are not fetched again, and no chunk is paid for twice.
    assert set(env.gateway.served).isdisjoint(done)
    assert set(env.gateway.served) | done == set(range(N_CHUNKS))
    assert env.payer.paid_msat == PRICE * N_CHUNKS
    assert result.paid_msat == env.payer.paid_msat - paid_first
    assert result.chunks_bought == sum(c for _, c in env.gateway.challenges[challenges_first:])
    assert result.paid_msat == PRICE * result.chunks_bought


async def test_expired_tokens_are_bought_again(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    env.gateway.expire_after_served = 6
    async with env.client() as client:
        result = await client.download(link, out=env.tmp / "x.bin", progress=False)
    assert (env.tmp / "x.bin").read_bytes() == src.read_bytes()
    assert env.gateway.refusals and all("expired" in r for r in env.gateway.refusals)
    assert sorted(env.gateway.served) == list(range(N_CHUNKS))
    assert N_CHUNKS < result.chunks_bought <= 2 * N_CHUNKS


async def test_tampered_chunk_fails_and_nothing_is_saved(env: Env) -> None:
    link = await env.upload(env.source())
    env.gateway.tamper = {3}
    out = env.tmp / "t.bin"
    async with env.client() as client:
        with pytest.raises(ChunkAuthError, match="chunk 3"):
            await client.download(link, out=out, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("delta", [1, 5000, -1], ids=["one-more", "much-more", "one-less"])
async def test_a_chunk_of_the_wrong_size_is_refused(env: Env, delta: int) -> None:
    # Read into a buffer one byte larger than the chunk: more cannot overflow it, and is
    # refused like less.
    link = await env.upload(env.source())
    env.gateway.resize = {3: delta}
    out = env.tmp / "r.bin"
    async with env.client() as client:
        with pytest.raises(ChunkAuthError, match=r"chunk 3: expected \d+ sealed bytes"):
            await client.download(link, out=out, progress=False)
    assert not out.exists()


async def test_sidecars_claim_only_chunks_already_on_disk(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens are saved without an fsync of .part, so no sidecar may list a chunk as done
    before an fsync that followed its write."""
    written: set[int] = set()  # chunk offsets written to .part
    durable: set[int] = set()  # ... and fsynced since
    saved: list[tuple[set[int], int]] = []  # each sidecar: its done chunks, its token count
    real_pwrite, real_fsync = dl_files._SharedFd.pwrite_all, dl_files._SharedFd.fsync
    real_write = dl_config.atomic_write_private

    def pwrite_all(fd: Any, data: bytes, offset: int) -> None:
        real_pwrite(fd, data, offset)
        written.add(offset // CHUNK)

    def fsync(fd: Any) -> None:
        pending = set(written)
        real_fsync(fd)
        durable.update(pending)

    def write(path: Path, data: bytes) -> None:
        state = json.loads(data)
        done = {i for first, last in state["done"] for i in range(first, last + 1)}
        assert done <= durable, f"sidecar claims {sorted(done - durable)} before an fsync"
        saved.append((done, len(state["tokens"])))
        real_write(path, data)

    monkeypatch.setattr(dl_files._SharedFd, "pwrite_all", pwrite_all)
    monkeypatch.setattr(dl_files._SharedFd, "fsync", fsync)
    monkeypatch.setattr(dl, "atomic_write_private", write)
    # No periodic save: only purchases (tokens) and the failure below write the sidecar.
    monkeypatch.setattr(dl, "_SAVE_INTERVAL_S", 3600.0)
    link = await env.upload(env.source())
    env.gateway.fail_gets_after = 12
    async with env.client(payer=False) as client:
        client.payer = SlowishPayer(env.gateway)  # chunks are written while it pays
        with pytest.raises(GatewayError):
            await client.download(link, out=env.tmp / "s.bin", progress=False)
    assert len([tokens for _, tokens in saved if tokens]) >= 3  # each purchase recorded
    assert written - {0} and saved[-2][0] == set()  # nothing was fsynced before the failure
    assert saved[-1][0] == durable == written  # which fsyncs and records every chunk


class SlowishPayer(FakePayer):
    """Each payment takes longer than the one before, so later purchases end (and save
    their tokens) while chunks bought earlier are being written."""

    def __init__(self, gateway: FakeGateway) -> None:
        super().__init__(gateway)
        self.started = 0

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        self.started += 1
        await asyncio.sleep(0.05 * self.started)
        return await super().pay(bolt11, expected_msat)


async def test_wrong_key_is_caught_before_paying(env: Env) -> None:
    link = await env.upload(env.source())
    wrong = ShareLink(link.gateway, link.file_id, bytes(32))
    async with env.client() as client:
        with pytest.raises(WrongKeyError):
            await client.info(wrong)
        with pytest.raises(WrongKeyError):
            await client.download(wrong, out=env.tmp / "w.bin", progress=False)
    assert env.payer.calls == [] and env.gateway.challenges == []


async def test_file_price_above_limit_is_refused_up_front(env: Env) -> None:
    link = await env.upload(env.source(), price=5_000)
    async with env.client(max_price_msat_per_chunk=4_999) as client:
        with pytest.raises(PaymentRefused, match="above your limit"):
            await client.download(link, out=env.tmp / "p.bin", progress=False)
    assert env.payer.calls == [] and env.gateway.challenges == []


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("advertised_price", 5_000, "above your limit"),  # the 402 asks more than the file said
        ("overcharge_msat", 1, "refusing to pay"),  # the invoice asks more than announced
    ],
)
async def test_gateway_asking_more_is_refused_before_paying(
    env: Env, setting: str, value: int, message: str
) -> None:
    link = await env.upload(env.source())
    setattr(env.gateway, setting, value)
    async with env.client(max_price_msat_per_chunk=PRICE) as client:
        with pytest.raises(PaymentRefused, match=message):
            await client.download(link, out=env.tmp / "o.bin", progress=False)
    assert env.payer.calls == []
    assert not (env.tmp / "o.bin").exists()


async def test_resumed_upload_sends_only_missing_chunks(env: Env) -> None:
    src = env.source()
    env.gateway.fail_puts_after = 7
    with pytest.raises(GatewayError, match="disk on fire"):
        await env.upload(src)
    (state_file,) = (env.tmp / "cache" / "uploads").iterdir()
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    first = set(env.gateway.puts)
    assert len(first) == 7

    env.gateway.fail_puts_after = None
    env.gateway.puts.clear()
    link = await env.upload(src)
    assert len(env.gateway.files) == 1  # same file id: key and id were reused
    assert sorted(env.gateway.puts) == sorted(set(range(N_CHUNKS)) - first)
    assert not state_file.exists()
    async with env.client() as client:
        result = await client.download(link, out=env.tmp / "u.bin", progress=False)
    assert result.path.read_bytes() == src.read_bytes()


async def test_changed_file_starts_a_new_upload(env: Env) -> None:
    src = env.source(size=2 * CHUNK)
    env.gateway.fail_puts_after = 1
    with pytest.raises(GatewayError):
        await env.upload(src)
    env.gateway.fail_puts_after = None
    src.write_bytes(os.urandom(3 * CHUNK))
    link = await env.upload(src)
    assert len(env.gateway.files) == 2
    async with env.client() as client:
        result = await client.download(link, out=env.tmp / "c.bin", progress=False)
    assert result.path.read_bytes() == src.read_bytes()


async def test_manifest_name_never_overwrites_an_existing_file(env: Env) -> None:
    link = await env.upload(env.source(name="notes.txt"))
    (env.out_dir() / "notes.txt").write_text("mine")
    async with env.client() as client:
        with pytest.raises(ClientError, match="already exists"):
            await client.download(link, out=env.out_dir(), progress=False)
        info = await client.info(link)
    assert info.media_type == "text/plain"
    assert (env.out_dir() / "notes.txt").read_text() == "mine"
    assert env.payer.calls == []


async def test_paid_file_without_payer_is_a_clear_error(env: Env) -> None:
    link = await env.upload(env.source(size=CHUNK))
    async with env.client(payer=False) as client:
        with pytest.raises(ClientError, match="no Lightning node"):
            await client.download(link, out=env.tmp / "n.bin", progress=False)


async def test_503_is_retried_and_4xx_shows_detail(env: Env) -> None:
    link = await env.upload(env.source(size=CHUNK))
    env.gateway.unavailable = 2
    async with env.client() as client:
        assert (await client.info(link)).size == CHUNK
        missing = ShareLink(link.gateway, bytes(16), link.key)
        with pytest.raises(GatewayError, match="404 Not found: no file") as info:
            await client.info(missing)
    assert info.value.status == 404


async def test_cli_upload_and_get(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.tmp / "xdg"))
    monkeypatch.chdir(env.out_dir())
    src = env.source(size=CHUNK + 5, name="cli.bin")
    cfg = str(env.tmp / "none.json")
    # The CLI runs its own event loop; the fake gateway keeps serving on this one.
    code = await asyncio.to_thread(
        main, ["upload", str(src), "--price-sat", "0", "--gateway", env.url, "-q", "--config", cfg]
    )
    assert code == 0
    url = capsys.readouterr().out.strip()
    assert ShareLink.parse(url).gateway == env.url
    assert await asyncio.to_thread(main, ["get", url, "-q", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "cli.bin" in out and "paid nothing" in out
    assert (env.out_dir() / "cli.bin").read_bytes() == src.read_bytes()
    assert await asyncio.to_thread(main, ["info", url, "--config", cfg]) == 0
    assert "free" in capsys.readouterr().out


# --- challenge parsing and the LND payer ------------------------------------------------------


def test_parse_challenge_prefers_l402() -> None:
    invoice = make_invoice(2_000, bytes(32))
    lsat, l402_value = l402.format_challenge("QUJD", invoice)
    assert parse_challenge([lsat, l402_value]).scheme == "L402"
    assert parse_challenge([lsat]).scheme == "LSAT"
    merged = parse_challenge(f'Basic realm="x", {lsat}, {l402_value.replace("QUJD", "REVG")}')
    assert (merged.scheme, merged.macaroon, merged.invoice) == ("L402", "REVG", invoice)
    with pytest.raises(ValueError):
        parse_challenge(['Bearer realm="x"'])
    with pytest.raises(ValueError):
        parse_challenge(['L402 macaroon="a b", invoice="x"'])


def test_token_scope_reads_caveats() -> None:
    mac = mint(b"k" * 32, l402.TokenId(0, bytes(32), bytes(32)).encode())
    for caveat in l402.build_caveats("fileid", 3, 9, 1_700_000_000):
        mac = add_caveat(mac, caveat.encode())
    mac = add_caveat(mac, b"bitcache_chunks=4-5")  # a narrower caveat wins
    scope = token_scope(to_base64(mac))
    assert scope is not None
    assert (scope.file_id, scope.first, scope.last, scope.valid_until) == (
        "fileid",
        4,
        5,
        1_700_000_000,
    )
    assert token_scope("not a macaroon") is None


class StubLnd:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    async def pay_invoice(self, bolt11: str, fee_limit_msat: int, timeout_s: int = 60) -> Payment:
        self.calls.append((bolt11, fee_limit_msat))
        if self.fail is not None:
            raise self.fail
        preimage = b"\x01" * 32
        return Payment(hashlib.sha256(preimage).digest(), preimage, 2_000, 7)


async def test_lnd_payer_checks_the_amount_before_paying() -> None:
    stub = StubLnd()
    payer = LndPayer(cast(LndRestClient, stub), max_fee_msat=50)
    with pytest.raises(PaymentRefused, match="asks 3 sat"):
        await payer.pay(make_invoice(3_000, bytes(32)), 2_000)
    with pytest.raises(PaymentRefused, match="not a valid invoice"):
        await payer.pay("lnbcrt20u1garbage", 2_000)
    assert stub.calls == []
    assert await payer.pay(make_invoice(2_000, bytes(32)), 2_000) == b"\x01" * 32
    assert stub.calls[0][1] == 50 and payer.fees_msat == 7

    failing = LndPayer(cast(LndRestClient, StubLnd(PaymentFailed("no route"))), max_fee_msat=50)
    with pytest.raises(PaymentError, match="no route"):
        await failing.pay(make_invoice(2_000, bytes(32)), 2_000)


class SlowPayer(FakePayer):
    """Holds the second payment until released, as a slow Lightning route would."""

    def __init__(self, gateway: FakeGateway) -> None:
        super().__init__(gateway)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        if len(self.calls) == 1:
            self.calls.append((bolt11, expected_msat))
            self.entered.set()
            await self.release.wait()
            return self.gateway.preimages[bolt11]
        return await super().pay(bolt11, expected_msat)


async def test_interruption_during_a_payment_keeps_its_token(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    out = env.tmp / "i.bin"
    payer = SlowPayer(env.gateway)
    cfg = ClientConfig(gateway_url=env.url)
    async with BitcacheClient(cfg, payer=payer, cache_dir=env.tmp / "cache") as client:
        task = asyncio.create_task(client.download(link, out=out, progress=False))
        await payer.entered.wait()
        task.cancel()  # Ctrl-C while the second payment is in flight
        await asyncio.sleep(0.01)
        payer.release.set()  # ...and the payment goes through after all
        with pytest.raises(asyncio.CancelledError):
            await task
    sidecar = json.loads(Path(f"{out}.part.json").read_text())
    assert (1, 4) in [(t["first"], t["last"]) for t in sidecar["tokens"]]  # the held one

    env.payer.calls = list(payer.calls)
    async with env.client() as client:
        await client.download(link, out=out, progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert env.payer.paid_msat == PRICE * N_CHUNKS  # nothing paid twice


class LostAnswerPayer(FakePayer):
    """The second payment goes through, but the answer never comes back: the process
    dies (here: an error escapes) with the money gone and no preimage kept."""

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        if len(self.calls) == 1:
            self.calls.append((bolt11, expected_msat))
            raise RuntimeError("killed mid-payment")
        return await super().pay(bolt11, expected_msat)


class RecoveringPayer(FakePayer):
    """Knows what an earlier run paid (as an LND node does) and says so."""

    def __init__(self, gateway: FakeGateway, paid_before: list[tuple[str, int]]) -> None:
        super().__init__(gateway)
        self.paid_before = {bolt11 for bolt11, _ in paid_before}
        self.asked: list[str] = []

    async def recover(self, bolt11: str) -> bytes | None:
        self.asked.append(bolt11)
        return self.gateway.preimages[bolt11] if bolt11 in self.paid_before else None


async def test_a_payment_whose_answer_was_lost_is_recovered_not_paid_again(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    out = env.tmp / "lost.bin"
    dying = LostAnswerPayer(env.gateway)
    cfg = ClientConfig(gateway_url=env.url, purchase_concurrency=1)
    async with BitcacheClient(cfg, payer=dying, cache_dir=env.tmp / "cache") as client:
        with pytest.raises(RuntimeError, match="killed mid-payment"):
            await client.download(link, out=out, progress=False)
    lost = dying.calls[1][0]
    sidecar = json.loads(Path(f"{out}.part.json").read_text())
    assert [o["invoice"] for o in sidecar["paying"]] == [lost]  # recorded before paying

    again = RecoveringPayer(env.gateway, dying.calls)
    async with BitcacheClient(cfg, payer=again, cache_dir=env.tmp / "cache") as client:
        result = await client.download(link, out=out, progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert again.asked == [lost]
    assert lost not in [bolt11 for bolt11, _ in again.calls]
    assert dying.paid_msat + again.paid_msat == PRICE * N_CHUNKS  # nothing paid twice
    assert result.paid_msat == again.paid_msat  # what this run paid, not the recovered


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display() -> None:
    now = [0.0]
    log = io.StringIO()
    meter = Progress(1000, label="f.bin", stream=log, clock=lambda: now[0])
    for _ in range(20):
        now[0] += 0.5
        meter.update(50)
    meter.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # one line per 10 % off a terminal, then the summary
    assert lines[0].startswith("f.bin: ") and "10.0%" in lines[0] and "ETA 0:09" in lines[0]
    assert "100.0%" in lines[9] and "transferred in 0:10" in lines[10]

    tty = _Tty()
    meter = Progress(1000, label="t.bin", stream=tty, clock=lambda: now[0], initial=500)
    for _ in range(10):
        meter.update(10)  # no time passes: redraws are throttled
    now[0] += 1
    meter.update(10)
    drawn = tty.getvalue()
    meter.close()
    # A rich bar on a terminal: a few frames, not one per update, with rate from our clock.
    assert 2 <= drawn.count("t.bin") <= 3 and "61%" in drawn and "100 bytes/s" in drawn
    summary = tty.getvalue()[len(drawn) :]
    assert summary.endswith("t.bin: 610 B done; 110 B transferred in 0:01 (0.00 MiB/s)\n")

    quiet = io.StringIO()
    meter = Progress(10, stream=quiet, quiet=True)
    meter.update(10)
    meter.close()
    assert quiet.getvalue() == ""


# --- runs: several chunks in one request --------------------------------------------------


async def test_a_free_download_takes_its_chunks_in_runs(env: Env) -> None:
    src = env.source()
    link = await env.upload(src, price=0)
    async with env.client(payer=False, concurrency=2, run_chunks=4) as client:
        result = await client.download(link, out=env.out_dir(), progress=False)
    assert result.path.read_bytes() == src.read_bytes()
    runs = env.gateway.runs_served
    assert runs and all(1 < last - first + 1 <= 4 for first, last in runs), runs
    in_runs = [i for first, last in runs for i in range(first, last + 1)]
    assert len(in_runs) == len(set(in_runs))  # no chunk asked for twice
    assert sorted(env.gateway.served) == list(range(N_CHUNKS))  # each chunk served once
    assert len(runs) < N_CHUNKS / 2  # most chunks came in runs, not alone


async def test_paid_runs_stay_inside_the_range_one_token_covers(env: Env) -> None:
    src = env.source()
    link = await env.upload(src)
    async with env.client(run_chunks=8) as client:
        result = await client.download(link, out=env.out_dir(), progress=False)
    assert result.path.read_bytes() == src.read_bytes()
    assert result.paid_msat == PRICE * N_CHUNKS  # runs buy nothing of their own
    sold = sorted(env.gateway.challenges)  # (first, count) of each range paid for
    assert env.gateway.runs_served and env.gateway.refusals == []
    for first, last in env.gateway.runs_served:
        assert any(f <= first and last < f + n for f, n in sold), (first, last, sold)
    assert sorted(env.gateway.served) == list(range(N_CHUNKS))


async def test_a_gateway_without_runs_is_asked_chunk_by_chunk(env: Env) -> None:
    env.gateway.runs = False
    src = env.source()
    link = await env.upload(src, price=0)
    async with env.client(payer=False, concurrency=3, run_chunks=4) as client:
        result = await client.download(link, out=env.out_dir(), progress=False)
    assert result.path.read_bytes() == src.read_bytes()
    # Each fetcher may have tried one run before the first 404 turned runs off.
    assert 1 <= len(env.gateway.runs_served) <= 3
    assert sorted(env.gateway.served) == list(range(N_CHUNKS))


async def test_a_run_of_the_wrong_length_is_fetched_again_chunk_by_chunk(env: Env) -> None:
    src = env.source()
    link = await env.upload(src, price=0)
    env.gateway.resize[5] = -10  # shorter in any answer: the chunk itself is refused
    async with env.client(payer=False, concurrency=1, run_chunks=4) as client:
        with pytest.raises(ChunkAuthError, match="chunk 5"):
            await client.download(link, out=env.out_dir(), progress=False)
    assert (4, 7) in env.gateway.runs_served  # the run holding chunk 5 was asked for
    assert env.gateway.served.count(5) == 2  # in the run, then alone
