"""The download engine: buy chunk ranges ahead of the fetchers, decrypt, save, resume.

Downloads keep payment off the critical path: purchasers buy chunk ranges ahead of the
fetchers (1, 4, 16, … chunks per payment, up to max_range_chunks), so after the first
payment the fetchers do not wait for money. Progress and paid tokens are kept in a
``.part.json`` sidecar, so an interrupted download resumes without fetching or paying twice:
a saver task records finished chunks once a second (after an fsync of ``.part``), and each
purchase records its token at once, without that fsync, so neither fetchers nor purchasers
wait for the disk. An offer is written there *before* it is paid: if the process dies
mid-payment (kill -9, power cut), the next run asks the Lightning node whether that invoice
was paid and takes its preimage, rather than paying for the same chunks again. Each fetcher
reads its chunks into one reused buffer and decrypts from it. When the chunks after the one
it takes are covered by the same token (or the file is free), a fetcher asks for up to
``run_chunks`` of them in one request (a run); a gateway that does not answer runs is
asked chunk by chunk from then on.

With prepaid credit (client/credit.py), a purchase is a chunk request presenting the credit
token: the gateway debits the range and answers with its first chunk and the range's
token, so no purchase waits for a payment, the first chunk included. Credit refused (too
little left) falls back to the invoice in that same 402 answer.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from client.config import ClientConfig, atomic_write_private
from client.credit import CreditWallet, HeldCredit
from client.errors import ClientError, GatewayError, PaymentRefused
from client.files import _STATE_VERSION, _fsync_dir, _SharedFd
from client.http import _PROBLEM_LIMIT, _clean, _is_count, _Reply, _Requester
from client.payer import Payer, check_invoice_amount, format_msat
from client.progress import Progress
from client.remote import _Remote
from client.tasks import _run_all, _settle
from l402 import ChallengeError, Token, parse_challenge, token_scope
from storage.crypto import plaintext_chunk_size, sealed_chunk_size

log = logging.getLogger("bitcache.client")

_SAVE_INTERVAL_S = 1.0
# Each purchase is this many times the last one: a payment takes a few hundred ms, so the
# first round of purchases (made at once by the purchasers) must already cover the chunks
# the fetchers take in that time. 1, 4, 16 is 21 chunks; 1, 2, 4 left them waiting.
_RANGE_GROWTH = 4
# A resumed token this close to its expiry is not worth presenting.
_EXPIRY_MARGIN_S = 5
# Credit spends tried for one range (each refusal says what is left) before its invoice.
_CREDIT_TRIES = 3


class _Buyer(_Requester, Protocol):
    """What the download engine needs of :class:`BitcacheClient`."""

    @property
    def config(self) -> ClientConfig: ...

    @property
    def payer(self) -> Payer | None: ...

    @property
    def credit(self) -> CreditWallet | None: ...


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    chunks: int
    paid_msat: int  # paid to the gateway during this call, fees excluded
    fees_msat: int  # routing fees during this call, if the payer reports them
    chunks_bought: int
    credit_spent_msat: int = 0  # of paid_msat, what prepaid credit paid


def _ranges(flags: bytearray) -> list[list[int]]:
    """Indexes set in ``flags`` as inclusive [first, last] runs (small sidecar files)."""
    out: list[list[int]] = []
    for i, flag in enumerate(flags):
        if not flag:
            continue
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _payer_fees(payer: Payer | None) -> int:
    value = getattr(payer, "fees_msat", 0)
    return value if _is_count(value) else 0


# --- download engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Offer:
    """A checked L402 challenge: what paying ``invoice`` buys."""

    macaroon: str = field(repr=False)
    invoice: str
    first: int
    count: int
    valid_until: int | None
    amount_msat: int

    def to_json(self) -> dict[str, Any]:
        return {
            "macaroon": self.macaroon,
            "invoice": self.invoice,
            "first": self.first,
            "count": self.count,
            "valid_until": self.valid_until,
            "amount_msat": self.amount_msat,
        }

    @classmethod
    def from_json(cls, data: Any) -> _Offer:
        """Inverse of :meth:`to_json`; ValueError if anything is off."""
        if not isinstance(data, dict):
            raise ValueError("not an offer")
        macaroon, invoice = data.get("macaroon"), data.get("invoice")
        first, count, amount = data.get("first"), data.get("count"), data.get("amount_msat")
        until = data.get("valid_until")
        if not isinstance(macaroon, str) or not isinstance(invoice, str):
            raise ValueError("bad offer")
        if not (_is_count(first) and _is_count(count) and _is_count(amount)) or count < 1:
            raise ValueError("bad offer range")
        if until is not None and not _is_count(until):
            raise ValueError("bad offer expiry")
        return cls(macaroon, invoice, first, count, until, amount)


class _Download:
    """One download: a purchaser buying ranges ahead, fetchers taking chunks in order."""

    def __init__(
        self,
        client: _Buyer,
        remote: _Remote,
        target: Path,
        from_manifest: bool,
        show: bool,
    ) -> None:
        self._c = client
        self._r = remote
        self._target = target
        self._from_manifest = from_manifest
        self._show = show
        self._part = target.with_name(target.name + ".part")
        self._sidecar = target.with_name(target.name + ".part.json")
        h = remote.header
        self._n = h.chunk_count
        self._paid = remote.price_msat > 0
        self._done = bytearray(self._n)
        self._remaining = self._n
        self._tokens: list[Token] = []
        # Offers being paid right now, or found in the sidecar after a crash mid-payment.
        self._paying: list[_Offer] = []
        # Needed chunks with no token and no purchase under way; a heap gives the lowest.
        self._uncovered: set[int] = set()
        self._heap: list[int] = []
        self._buying: list[tuple[int, int]] = []  # ranges being paid for right now
        self._starved = 0  # fetchers waiting for a token
        self._next_range = 1
        self._paid_msat = 0
        self._chunks_bought = 0
        self._budget_chunks = 0
        self._credit: HeldCredit | None = None  # spent first, while the gateway takes it
        self._credit_spent_msat = 0
        self._order: collections.deque[int] = collections.deque()  # needed, in file order
        self._runs = client.config.run_chunks > 1  # off once the gateway refuses a run
        self._cond = asyncio.Condition()
        self._fd: _SharedFd | None = None
        self._meter: Progress | None = None
        # Sidecar writes are numbered so that a late, older snapshot never replaces a newer one.
        self._save_lock = threading.Lock()
        self._seq = 0
        self._saved_seq = 0
        # The done ranges known to be on disk (fsynced): all a sidecar may claim as done.
        self._durable: list[list[int]] = []

    # --- persistence (sync; run in a thread or from cleanup) ----------------------------

    def _prepare(self) -> None:
        """Open ``.part``; take done chunks and still-valid tokens from the sidecar."""
        h = self._r.header
        done: list[Any] = []
        try:
            state = json.loads(self._sidecar.read_bytes())
        except (OSError, ValueError):
            state = None
        if isinstance(state, dict) and state.get("file_id") == self._r.file_id:
            cutoff = time.time() + _EXPIRY_MARGIN_S
            for raw in state.get("tokens") or []:
                try:
                    token = Token.from_json(raw)
                except (ValueError, AttributeError):
                    continue
                if token.last < self._n and (
                    token.valid_until is None or token.valid_until > cutoff
                ):
                    self._tokens.append(token)
            for raw in state.get("paying") or []:
                try:
                    offer = _Offer.from_json(raw)
                except ValueError:
                    continue
                if offer.first + offer.count <= self._n:
                    self._paying.append(offer)
            if (
                state.get("version") == _STATE_VERSION
                and state.get("size") == h.plaintext_size
                and state.get("chunk_size") == h.chunk_size
                and isinstance(state.get("done"), list)
            ):
                done = state["done"]
        fd = _SharedFd(os.open(self._part, os.O_RDWR | os.O_CREAT, 0o666))
        self._fd = fd
        if done and fd.size() == h.plaintext_size:
            for run in done:
                if (
                    isinstance(run, list)
                    and len(run) == 2
                    and all(_is_count(v) for v in run)
                    and run[0] <= run[1] < self._n
                ):
                    self._done[run[0] : run[1] + 1] = b"\x01" * (run[1] - run[0] + 1)
        else:
            fd.truncate(0)  # bytes without a matching record are not trusted
        fd.truncate(h.plaintext_size)
        self._durable = _ranges(self._done)  # as recorded before: on disk

    def _snapshot(
        self, chunks: bool = True
    ) -> tuple[int, dict[str, list[dict[str, Any]]], list[list[int]] | None]:
        """What to save, taken on the event loop: tokens and offers being paid, and the
        done ranges unless only those are being saved."""
        self._seq += 1
        money = {
            "tokens": [t.to_json() for t in self._tokens],
            "paying": [o.to_json() for o in self._paying],
        }
        return self._seq, money, _ranges(self._done) if chunks else None

    def _write_sidecar(
        self, seq: int, money: dict[str, list[dict[str, Any]]], done: list[list[int]] | None
    ) -> None:
        """Write the sidecar; with ``done``, first make those chunks durable (fsync)."""
        with self._save_lock:
            if seq <= self._saved_seq:
                return
            if done is not None and self._fd is not None:
                # Chunks recorded as done must be on disk first.
                self._fd.fsync()
                self._durable = done
            h = self._r.header
            data = {
                "version": _STATE_VERSION,
                "file_id": self._r.file_id,
                "size": h.plaintext_size,
                "chunk_size": h.chunk_size,
                "done": self._durable,
                **money,
            }
            atomic_write_private(self._sidecar, json.dumps(data).encode())
            self._saved_seq = seq

    async def _save(self, chunks: bool = True) -> None:
        await asyncio.to_thread(self._write_sidecar, *self._snapshot(chunks))

    async def _saver(self) -> None:
        """Records finished chunks once a second until the download is done, so that
        fetchers never wait for an fsync."""
        while self._remaining:
            async with self._cond:
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: self._remaining == 0), _SAVE_INTERVAL_S
                    )
                except TimeoutError:
                    pass
            if self._remaining:
                await self._save()

    def _abandon(self) -> None:
        """After a failure or interruption: record what we have (tokens above all)."""
        try:
            if self._fd is not None and not self._fd.closed:
                self._write_sidecar(*self._snapshot())
        except OSError as exc:
            log.warning("could not save download state to %s: %s", self._sidecar, exc)
        finally:
            if self._fd is not None:
                self._fd.close()

    def _finish(self) -> None:
        assert self._fd is not None
        self._fd.fsync()
        size = self._fd.size()
        self._fd.close()
        expected = self._r.manifest.size
        if size != expected:
            raise ClientError(f"{self._part} has {size} bytes, expected {expected}")
        if self._from_manifest and self._target.exists():
            raise ClientError(f"{self._target} already exists; choose another path with -o")
        os.replace(self._part, self._target)
        _fsync_dir(self._target.parent)
        self._sidecar.unlink(missing_ok=True)

    def _store(self, index: int, sealed: memoryview) -> int:
        """Authenticate, decrypt and write one chunk (runs in a worker thread); ``sealed``
        is read in place, in the fetcher's buffer."""
        plaintext = self._r.decryptor.open(index, sealed)  # ChunkAuthError names the chunk
        assert self._fd is not None
        offset = index * self._r.header.chunk_size
        self._fd.pwrite_all(plaintext, offset)
        self._fd.start_writeback(offset, len(plaintext))
        return len(plaintext)

    def _store_run(self, first: int, sealed: memoryview, sizes: list[int]) -> list[int]:
        """_store for each chunk of a run, read in place one after another."""
        lengths, start = [], 0
        for index, size in enumerate(sizes, first):
            lengths.append(self._store(index, sealed[start : start + size]))
            start += size
        return lengths

    # --- bookkeeping (event loop only) --------------------------------------------------

    def _token_for(self, index: int) -> Token | None:
        for token in reversed(self._tokens):  # newest first: a rebought token is fresher
            if token.covers(index):
                return token
        return None

    def _has_uncovered(self) -> bool:
        while self._heap and self._heap[0] not in self._uncovered:
            heapq.heappop(self._heap)  # stale entry: covered, bought or done since
        return bool(self._heap)

    def _uncover(self, index: int) -> None:
        if (
            self._done[index]
            or index in self._uncovered
            or any(first <= index <= last for first, last in self._buying)
            or self._token_for(index) is not None
        ):
            return
        self._uncovered.add(index)
        heapq.heappush(self._heap, index)

    def _purchase_due(self) -> bool:
        if self._remaining == 0:
            return True
        if not self._has_uncovered():
            return False
        ahead = self._remaining - len(self._uncovered)  # bought but not yet fetched
        # Two ranges ahead keeps the fetchers busy while the next payments are made; several
        # purchasers pay at once, so the doubling ramp is not paid for one latency at a time.
        return self._starved > 0 or ahead < 2 * max(1, self._next_range)

    def _take_run(self, size: int) -> tuple[int, int]:
        first = heapq.heappop(self._heap)
        self._uncovered.discard(first)
        count = 1
        while count < size and first + count in self._uncovered:
            self._uncovered.discard(first + count)
            count += 1
        self._buying.append((first, first + count - 1))
        return first, count

    def _end_buy(self, first: int, count: int) -> None:
        self._buying.remove((first, first + count - 1))
        # Whatever the gateway did not sell (it may clip a range) is bought later.
        for index in range(first, first + count):
            self._uncover(index)

    def _add_token(self, offer: _Offer, preimage: bytes) -> None:
        last = offer.first + offer.count - 1
        self._tokens.append(Token(offer.macaroon, preimage, offer.first, last, offer.valid_until))
        self._paid_msat += offer.amount_msat
        self._chunks_bought += offer.count

    def _drop(self, token: Token) -> None:
        if not any(t is token for t in self._tokens):
            return  # another fetcher already dropped it
        self._tokens = [t for t in self._tokens if t is not token]
        for index in range(token.first, token.last + 1):
            self._uncover(index)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # --- the purchaser ------------------------------------------------------------------

    async def _purchaser(self) -> None:
        maximum = self._c.config.max_range_chunks
        while True:
            async with self._cond:
                await self._cond.wait_for(self._purchase_due)
                if self._remaining == 0:
                    return
                first, count = self._take_run(min(self._next_range, maximum))
                self._next_range = min(self._next_range * _RANGE_GROWTH, maximum)
            try:
                await self._buy(first, count)
            finally:
                self._end_buy(first, count)
            await self._notify()
            # A paid token must survive any interruption; recording only the tokens needs
            # no fsync of .part, so the next purchase is not held up by the disk.
            await self._save(chunks=False)

    async def _buy(self, first: int, count: int) -> int:
        reply: _Reply | None = None
        price = max(1, self._r.price_msat)
        # Credit first; a refusal (another purchase spent it first) tries what is left,
        # then the invoice in the gateway's last 402.
        for _ in range(_CREDIT_TRIES):
            credit = await self._spendable(price)
            if credit is None:
                break
            n = min(count, credit.available_msat // price)
            refused = await self._spend(credit, first, n)
            if refused is None:
                return n
            reply = refused
        if reply is None:
            url = f"{self._r.chunk_url(first)}?count={count}"
            reply = await self._c._request("GET", url, ok=(200,), allow_402=True)
        if reply.status == 200:
            raise GatewayError(
                200,
                "Unexpected chunk",
                "the gateway served a chunk without payment, yet lists a price",
            )
        offer = self._check_offer(first, count, reply)
        if self._chunks_bought + offer.count > self._budget_chunks:
            raise PaymentRefused(
                f"the gateway keeps refusing paid tokens; stopped after buying "
                f"{self._chunks_bought} chunks ({format_msat(self._paid_msat)})"
            )
        payer = self._c.payer
        assert payer is not None
        log.debug("buying chunks %d-%d", offer.first, offer.first + offer.count - 1)
        # On disk before any money moves: a crash from here on cannot lose this payment.
        self._paying.append(offer)
        await self._save(chunks=False)
        # A payment in flight cannot be recalled: even if interrupted, keep its token.
        await _settle(
            payer.pay(offer.invoice, offer.amount_msat),
            lambda preimage: self._paid_offer(offer, preimage),
        )
        return offer.count

    async def _spendable(self, price: int) -> HeldCredit | None:
        """Credit that pays at least one chunk now: the one in use, else one held (a
        top-up may have arrived since the last was used up)."""
        wallet = self._c.credit
        if wallet is None:
            return None
        if self._credit is None or not self._credit.usable(time.time(), price):
            self._credit = await wallet.usable(self._r.link.gateway, price)
        return self._credit

    async def _spend(self, credit: HeldCredit, first: int, count: int) -> _Reply | None:
        """Buys chunks first.. with credit and stores chunk ``first`` from the same answer;
        None when done, else the gateway's 402 (its invoice is the fallback)."""
        wallet = self._c.credit
        assert wallet is not None and credit.preimage is not None
        h = self._r.header
        buffer = bytearray(sealed_chunk_size(first, h.plaintext_size, h.chunk_size) + 1)
        asked = count * self._r.price_msat
        wallet.reserve(credit, asked)
        try:
            # One attempt: a retried spend could be debited twice.
            reply = await self._c._request(
                "GET",
                f"{self._r.chunk_url(first)}?count={count}",
                ok=(200,),
                allow_402=True,
                headers={"Authorization": credit.authorization()},
                limit=_PROBLEM_LIMIT,
                into=buffer,
                attempts=1,
            )
        except BaseException:
            credit.in_flight_msat -= asked  # unknown outcome: the gateway will say later
            raise
        if reply.status == 402:
            left = reply.problem().get("credit_remaining_msat")
            log.debug("credit refused (%s)", _clean(reply.problem().get("detail")))
            await wallet.refused(credit, asked, left if _is_count(left) else None)
            self._credit = None
            return reply
        try:
            token, spent, left = self._credit_token(credit, first, count, reply)
        except GatewayError:
            credit.in_flight_msat -= asked
            raise
        body = reply.body
        assert isinstance(body, memoryview)
        await _settle(
            asyncio.to_thread(self._store, first, body),
            lambda length: self._bought_with_credit(token, spent, first, length),
        )
        await wallet.spent(credit, asked, spent, left)
        return None

    def _credit_token(
        self, credit: HeldCredit, first: int, count: int, reply: _Reply
    ) -> tuple[Token, int, int]:
        """The range token a credit spend answered with, checked against what was asked:
        (token, msat spent, msat left)."""
        mac = reply.headers.get("Bitcache-Token", "")
        spent = reply.headers.get("Bitcache-Credit-Spent", "")
        left = reply.headers.get("Bitcache-Credit-Remaining", "")
        scope = token_scope(mac) if mac else None
        if scope is None or not spent.isdigit() or not left.isdigit():
            raise GatewayError(200, "Bad answer", "a credit spend came without its token")
        n = scope.last - scope.first + 1
        if scope.file_id != self._r.file_id or scope.first != first or not 1 <= n <= count:
            raise GatewayError(200, "Bad answer", "credit bought another range than asked")
        if int(spent) != n * self._r.price_msat:
            raise GatewayError(
                200,
                "Bad answer",
                f"credit was charged {format_msat(int(spent))} for {n} chunks at "
                f"{format_msat(self._r.price_msat)}",
            )
        assert credit.preimage is not None
        token = Token(mac, credit.preimage, scope.first, scope.last, scope.valid_until, used=True)
        return token, int(spent), int(left)

    def _bought_with_credit(self, token: Token, spent: int, first: int, length: int) -> None:
        self._tokens.append(token)
        self._paid_msat += spent
        self._credit_spent_msat += spent
        self._chunks_bought += token.count
        self._mark_done(first, length)

    def _paid_offer(self, offer: _Offer, preimage: bytes) -> None:
        self._add_token(offer, preimage)
        # Only a payment known to be done leaves the list; a failed one stays until a
        # later run has asked the node (its outcome may be unknown, e.g. node unreachable).
        self._paying = [o for o in self._paying if o is not offer]

    async def _recover(self, payer: Payer | None) -> None:
        """Offers a crashed run was paying: keep the token of each one the node did pay,
        forget the others (their chunks are bought again)."""
        if not self._paying:
            return
        recover = getattr(payer, "recover", None)
        if recover is None:  # this payer cannot say what it paid: nothing to go on
            self._paying.clear()
            return
        for offer in list(self._paying):
            preimage = await recover(offer.invoice)
            if preimage is not None:
                last = offer.first + offer.count - 1
                self._tokens.append(
                    Token(offer.macaroon, preimage, offer.first, last, offer.valid_until)
                )
                log.debug("recovered the paid token for chunks %d-%d", offer.first, last)
            self._paying.remove(offer)
        await self._save(chunks=False)

    def _check_offer(self, first: int, count: int, reply: _Reply) -> _Offer:
        """Everything that must hold before paying; PaymentRefused otherwise."""
        try:
            challenge = parse_challenge(reply.headers.getall("WWW-Authenticate", []))
        except ChallengeError as exc:
            raise GatewayError(402, "Payment required", str(exc)) from None
        problem = reply.problem()
        price = problem.get("price_msat")
        if not _is_count(price):
            raise GatewayError(402, "Payment required", "the challenge states no price_msat")
        limit = self._c.config.max_price_msat_per_chunk
        if price > limit:
            raise PaymentRefused(
                f"the gateway asks {format_msat(price)} per chunk, above your limit of "
                f"{format_msat(limit)} (max_price_msat_per_chunk); nothing was paid"
            )
        body_first, body_count = problem.get("first"), problem.get("count")
        scope = token_scope(challenge.macaroon)
        if scope is not None:
            # The macaroon is what the gateway will honour; the body must agree with it.
            if scope.file_id is not None and scope.file_id != self._r.file_id:
                raise PaymentRefused("the offered token is for another file; nothing was paid")
            got_first, got_count = scope.first, scope.last - scope.first + 1
            valid_until = scope.valid_until
            if (body_first is not None and body_first != got_first) or (
                body_count is not None and body_count != got_count
            ):
                raise PaymentRefused(
                    "the gateway's challenge contradicts its token's range; nothing was paid"
                )
        elif _is_count(body_first) and _is_count(body_count):
            got_first, got_count = body_first, body_count
            until = problem.get("valid_until")
            valid_until = until if _is_count(until) else None
        else:
            raise GatewayError(402, "Payment required", "the challenge states no chunk range")
        if got_first != first or not 1 <= got_count <= count:
            raise PaymentRefused(
                f"asked to buy chunks {first}-{first + count - 1}, was offered "
                f"{got_first}-{got_first + got_count - 1}; nothing was paid"
            )
        amount = price * got_count
        stated = problem.get("amount_msat")
        if stated is not None and stated != amount:
            raise PaymentRefused(
                f"the gateway states another amount than {got_count} chunks at "
                f"{format_msat(price)} each; nothing was paid"
            )
        # Also checked by LndPayer; here so that no Payer can be handed a wrong invoice.
        check_invoice_amount(challenge.invoice, amount)
        return _Offer(
            challenge.macaroon, challenge.invoice, got_first, got_count, valid_until, amount
        )

    # --- the fetchers -------------------------------------------------------------------

    async def _wait_token(self, index: int) -> Token | None:
        """A token for chunk ``index``; None if the chunk came meanwhile (a credit spend
        brings its range's first chunk)."""
        token = self._token_for(index)
        if token is not None or self._done[index]:
            return token
        async with self._cond:
            self._starved += 1
            self._cond.notify_all()
            try:
                await self._cond.wait_for(
                    lambda: self._done[index] or self._token_for(index) is not None
                )
            finally:
                self._starved -= 1
        return self._token_for(index)

    async def _fetcher(self) -> None:
        # One buffer per fetcher, reused for every request it makes: a run of the largest
        # sealed chunks plus one byte, so an oversized answer fails the length check.
        h = self._r.header
        largest = sealed_chunk_size(0, h.plaintext_size, h.chunk_size)
        buffer = bytearray(largest * (self._c.config.run_chunks if self._runs else 1) + 1)
        while self._order:  # shared: fetchers take chunks in file order
            index = self._order[0]
            token = None
            if self._paid:
                # Wait before taking it: the fetchers waiting for the same token then take
                # the range it covers in runs, rather than one chunk each.
                token = await self._wait_token(index)
                if not self._order or self._order[0] != index:
                    continue  # another fetcher took it meanwhile
            self._order.popleft()
            last = self._extend(index, token)
            if last > index:
                await self._fetch_run(index, last, token, buffer)
            else:
                await self._fetch(index, buffer)

    def _fetchers(self) -> int:
        """``concurrency`` fetchers; half as many when they ask for runs, since the gateway
        keeps two chunks of each run busy (one relayed, the next one's storage connection
        opening). Measured: 8 fetchers of runs of 4 beat 16 of them by ~25 %, and 16
        fetchers of single chunks by as much (bench.download, 256 MiB)."""
        n = self._c.config.concurrency
        return max(1, (n + 1) // 2) if self._runs else n

    def _extend(self, first: int, token: Token | None) -> int:
        """The last chunk of the run starting at ``first``: the next needed chunks taken
        from the order while they follow on, are not done, and ``token`` covers them (or
        the file is free)."""
        last = first
        if not self._runs or self._done[first] or (self._paid and token is None):
            return last
        limit = first + self._c.config.run_chunks - 1
        while (
            last < limit
            and self._order
            and self._order[0] == last + 1
            and not self._done[last + 1]
            and (token is None or token.covers(last + 1))
        ):
            last = self._order.popleft()
        return last

    async def _fetch_run(
        self, first: int, last: int, token: Token | None, buffer: bytearray
    ) -> None:
        """Chunks first..last in one request; anything but the whole run (a gateway without
        runs, a refused token, a wrong length) falls back to one request per chunk."""
        h = self._r.header
        sizes = [
            sealed_chunk_size(i, h.plaintext_size, h.chunk_size) for i in range(first, last + 1)
        ]
        total = sum(sizes)
        headers = {"Authorization": token.authorization()} if token is not None else None
        try:
            reply = await self._c._request(
                "GET",
                self._r.run_url(first, last),
                ok=(200,),
                allow_402=True,
                headers=headers,
                limit=_PROBLEM_LIMIT,
                into=memoryview(buffer)[: total + 1],
            )
        except GatewayError as exc:
            log.info("no runs from this gateway (%s); one chunk per request", exc)
            self._runs = False
            reply = None
        body = reply.body if reply is not None and reply.status == 200 else None
        if body is None or len(body) != total:
            if body is not None:
                log.warning("run %d-%d: %d bytes, %d expected", first, last, len(body), total)
            for index in range(first, last + 1):
                await self._fetch(index, buffer)
            return
        if token is not None:
            token.used = True
        assert isinstance(body, memoryview)  # a 200 read into our buffer
        await _settle(
            asyncio.to_thread(self._store_run, first, body, sizes),
            lambda lengths: self._mark_run_done(first, lengths),
        )
        await self._notify()

    async def _fetch(self, index: int, buffer: bytearray) -> None:
        h = self._r.header
        into = memoryview(buffer)[: sealed_chunk_size(index, h.plaintext_size, h.chunk_size) + 1]
        url = self._r.chunk_url(index)
        while True:
            token = await self._wait_token(index) if self._paid else None
            if self._done[index]:
                return
            headers = {"Authorization": token.authorization()} if token is not None else None
            reply = await self._c._request(
                "GET",
                url,
                ok=(200,),
                allow_402=True,
                headers=headers,
                limit=_PROBLEM_LIMIT,
                into=into,
            )
            if reply.status == 402:
                await self._refused(index, token, reply)
                continue
            if token is not None:
                token.used = True
            body = reply.body
            assert isinstance(body, memoryview)  # a 200 read into our buffer
            # Received bytes are kept even if the download is being interrupted.
            await _settle(
                asyncio.to_thread(self._store, index, body),
                lambda length: self._mark_done(index, length),
            )
            await self._notify()
            return

    async def _refused(self, index: int, token: Token | None, reply: _Reply) -> None:
        detail = _clean(reply.problem().get("detail")) or "payment required"
        if token is None:
            raise GatewayError(
                402, "Payment required", f"chunk {index} of a file listed as free: {detail}"
            )
        if not token.used and "expired" not in detail.lower():
            raise GatewayError(
                402,
                "Token refused",
                f"the gateway refused the token it just sold for chunks "
                f"{token.first}-{token.last}: {detail}",
            )
        log.debug(
            "token for chunks %d-%d refused (%s); buying again", token.first, token.last, detail
        )
        self._drop(token)
        await self._notify()

    def _mark_run_done(self, first: int, lengths: list[int]) -> None:
        for index, length in enumerate(lengths, first):
            self._mark_done(index, length)

    def _mark_done(self, index: int, length: int) -> None:
        self._done[index] = 1
        self._remaining -= 1
        self._uncovered.discard(index)
        self._tokens = [
            t
            for t in self._tokens
            if not (t.covers(index) and all(self._done[t.first : t.last + 1]))
        ]
        if self._meter is not None:
            self._meter.update(length)

    # --- the whole ----------------------------------------------------------------------

    async def run(self) -> DownloadResult:
        payer = self._c.payer
        fees_before = _payer_fees(payer)
        h = self._r.header
        try:
            await asyncio.to_thread(self._prepare)
            await self._recover(payer)
            if self._paid and self._c.credit is not None:
                await self._ready_credit(self._c.credit)
            needed = [i for i in range(self._n) if not self._done[i]]
            self._remaining = len(needed)
            for index in needed:
                self._uncover(index)
            # Rebuying after expiry is allowed, but never more than once per needed chunk.
            self._budget_chunks = len(self._uncovered) + len(needed)
            if self._paid and self._uncovered and payer is None:
                raise ClientError(
                    f"this file costs {format_msat(self._r.price_msat)} per chunk and no "
                    "Lightning node is configured to pay (set 'lnd' in the client configuration)"
                )
            left = sum(plaintext_chunk_size(i, h.plaintext_size, h.chunk_size) for i in needed)
            self._meter = Progress(
                h.plaintext_size,
                label=self._target.name,
                initial=h.plaintext_size - left,
                quiet=not self._show,
            )
            self._order.extend(needed)
            tasks = [self._fetcher() for _ in range(min(self._fetchers(), len(needed)))]
            if self._paid and needed:
                tasks += [self._purchaser() for _ in range(self._c.config.purchase_concurrency)]
            if needed:
                tasks.append(self._saver())
            ok = False
            try:
                await _run_all(tasks)
                ok = True
            finally:
                self._meter.close(ok)
            await asyncio.to_thread(self._finish)
        except BaseException:
            self._abandon()
            raise
        return DownloadResult(
            path=self._target,
            size=h.plaintext_size,
            chunks=self._n,
            paid_msat=self._paid_msat,
            fees_msat=max(0, _payer_fees(payer) - fees_before),
            chunks_bought=self._chunks_bought,
            credit_spent_msat=self._credit_spent_msat,
        )

    async def _ready_credit(self, wallet: CreditWallet) -> None:
        """Credit to spend, bought now if none is held; without it, invoices as before."""
        try:
            self._credit = await wallet.ready(self._r.link.gateway)
        except (GatewayError, PaymentRefused) as exc:
            log.warning("no credit (%s); paying per range", exc)
