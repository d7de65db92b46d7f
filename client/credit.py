"""Prepaid credit the client holds at gateways, so a paid download waits for no payment.

With ``credit_msat`` set, the client buys that much credit (``POST /v1/credit``, an L402
challenge paid like a chunk range) the first time it downloads a paid file from a gateway
where it holds none, and buys more in the background when what it holds there falls
below a quarter of it, so a download never waits for a top-up. Downloads spend credit
first (one debit per range, done by the gateway) and fall back to per-range invoices when
the gateway refuses it.

Credit tokens are kept in ``credit.json`` beside the client configuration, readable by
the owner only (a token with its preimage is money). A purchase is written there *before*
it is paid, so a crash mid-payment loses nothing: the next start asks the Lightning node
whether it paid, as resumed downloads do (docs/format.md, "Client credit file").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from client.config import ClientConfig, atomic_write_private, default_config_path
from client.errors import ClientError, GatewayError, PaymentRefused
from client.http import _is_count, _Requester
from client.payer import Payer, check_invoice_amount
from l402 import ChallengeError, is_credit_macaroon, parse_challenge
from l402.headers import MACAROON_TEXT_RE

__all__ = ["CREDIT_FILE_VERSION", "CreditWallet", "HeldCredit", "default_credit_path"]

log = logging.getLogger("bitcache.client")

CREDIT_FILE_VERSION = 1
# A credit this close to its expiry is not presented any more.
_EXPIRY_MARGIN_S = 60
# How long a balance changed by spends may wait before it is written. Balances are hints
# (the gateway answers every spend with the true one, and refuses an overdraft), so a
# download's spends share a write instead of an fsync each, which slowed its own writes.
BALANCE_SAVE_DELAY_S = 1.0
_HEX64 = re.compile(r"[0-9a-f]{64}")


def default_credit_path() -> Path:
    """``credit.json`` beside the client configuration."""
    return default_config_path().with_name("credit.json")


@dataclass
class HeldCredit:
    """A credit token: bought at ``gateway`` for ``amount_msat``; ``remaining_msat`` is
    what the gateway last said it holds. ``preimage`` is None while its payment is made."""

    gateway: str
    macaroon: str = field(repr=False)
    invoice: str = field(repr=False)
    amount_msat: int
    remaining_msat: int
    valid_until: int
    preimage: bytes | None = field(default=None, repr=False)
    # Spends sent and not yet answered (not saved): concurrent purchases of one download
    # do not count the same msat twice.
    in_flight_msat: int = field(default=0, repr=False, compare=False)

    def authorization(self) -> str:
        assert self.preimage is not None
        return f"L402 {self.macaroon}:{self.preimage.hex()}"

    @property
    def available_msat(self) -> int:
        return max(0, self.remaining_msat - self.in_flight_msat)

    def usable(self, now: float, min_msat: int = 1) -> bool:
        return (
            self.preimage is not None
            and self.available_msat >= max(1, min_msat)
            and self.valid_until > now + _EXPIRY_MARGIN_S
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "macaroon": self.macaroon,
            "invoice": self.invoice,
            "amount_msat": self.amount_msat,
            "remaining_msat": self.remaining_msat,
            "valid_until": self.valid_until,
            "preimage": None if self.preimage is None else self.preimage.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> HeldCredit:
        """Inverse of :meth:`to_json`; ValueError if anything is off."""
        if not isinstance(data, dict):
            raise ValueError("not a credit")
        gateway, macaroon, invoice = data.get("gateway"), data.get("macaroon"), data.get("invoice")
        amount, left, until = (
            data.get(k) for k in ("amount_msat", "remaining_msat", "valid_until")
        )
        preimage = data.get("preimage")
        if not all(isinstance(v, str) for v in (gateway, macaroon, invoice)):
            raise ValueError("bad credit")
        assert isinstance(macaroon, str) and isinstance(gateway, str) and isinstance(invoice, str)
        if not MACAROON_TEXT_RE.fullmatch(macaroon):
            raise ValueError("bad macaroon")
        if not (_is_count(amount) and _is_count(left) and _is_count(until)) or left > amount:
            raise ValueError("bad amounts")
        if preimage is not None and (
            not isinstance(preimage, str) or not _HEX64.fullmatch(preimage)
        ):
            raise ValueError("bad preimage")
        return cls(
            gateway,
            macaroon,
            invoice,
            amount,
            left,
            until,
            None if preimage is None else bytes.fromhex(preimage),
        )


class _Wallet(_Requester, Protocol):
    @property
    def config(self) -> ClientConfig: ...

    @property
    def payer(self) -> Payer | None: ...


class CreditWallet:
    """The credit tokens held, spent first by downloads and topped up in the background."""

    def __init__(self, client: _Wallet, path: Path) -> None:
        self._c = client
        self._path = path
        self._credits: list[HeldCredit] | None = None  # read on first use
        self._lock = asyncio.Lock()  # one purchase at a time
        self._save_lock = asyncio.Lock()
        self._topups: dict[str, asyncio.Task[None]] = {}
        self._balances_saver: asyncio.Task[None] | None = None
        self._balances_dirty = False
        self._closing = asyncio.Event()
        self.bought_msat = 0  # credit paid for by this wallet (fees excluded)

    @property
    def amount_msat(self) -> int:
        return self._c.config.credit_msat

    @property
    def topup_below_msat(self) -> int:
        return self._c.config.credit_msat // 4

    # --- the file --------------------------------------------------------------------

    def _load(self) -> list[HeldCredit]:
        try:
            data = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ClientError(f"{self._path}: cannot read the credit file: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != CREDIT_FILE_VERSION:
            raise ClientError(f"{self._path}: not a credit file of version {CREDIT_FILE_VERSION}")
        held = []
        for raw in data.get("credits") or []:
            try:
                held.append(HeldCredit.from_json(raw))
            except ValueError as exc:
                log.warning("ignoring a malformed credit in %s: %s", self._path, exc)
        return held

    def _write(self, snapshot: list[dict[str, Any]]) -> None:
        body = {"version": CREDIT_FILE_VERSION, "credits": snapshot}
        atomic_write_private(self._path, json.dumps(body, indent=1).encode())

    async def _save(self) -> None:
        # One write at a time, each of the state when it started: a slow older write
        # never lands after a newer one.
        async with self._save_lock:
            assert self._credits is not None
            now = time.time()
            # Spent or expired credit is worth nothing: only what can still be used is kept.
            self._credits = [
                c
                for c in self._credits
                if c.preimage is None or (c.remaining_msat and c.valid_until > now)
            ]
            await asyncio.to_thread(self._write, [c.to_json() for c in self._credits])

    async def _held(self) -> list[HeldCredit]:
        if self._credits is None:
            self._credits = await asyncio.to_thread(self._load)
            await self._recover()
        return self._credits

    async def _recover(self) -> None:
        """Purchases a crashed run was paying: keep those the node paid, forget the rest."""
        assert self._credits is not None
        pending = [c for c in self._credits if c.preimage is None]
        if not pending:
            return
        recover = getattr(self._c.payer, "recover", None)
        if recover is None:  # this payer cannot say what it paid: keep them for one that can
            return
        for credit in pending:
            preimage = await recover(credit.invoice)
            if preimage is None:
                self._credits.remove(credit)
            else:
                credit.preimage = preimage
        await self._save()

    # --- spending --------------------------------------------------------------------

    async def usable(self, gateway: str, min_msat: int = 1) -> HeldCredit | None:
        """Credit to spend at ``gateway`` with at least ``min_msat`` available: the one
        with the least (so tokens are used up one after another); None if none is held."""
        now = time.time()
        held = [c for c in await self._held() if c.gateway == gateway and c.usable(now, min_msat)]
        return min(held, key=lambda c: c.available_msat) if held else None

    def total(self, gateway: str) -> int:
        now = time.time()
        return sum(
            c.available_msat for c in self._credits or [] if c.gateway == gateway and c.usable(now)
        )

    async def ready(self, gateway: str) -> HeldCredit | None:
        """Credit to spend at ``gateway``, bought now if none is held (and credit is on)."""
        if self.amount_msat <= 0 or self._c.payer is None:
            return None
        credit = await self.usable(gateway)
        if credit is not None:
            return credit
        async with self._lock:
            credit = await self.usable(gateway)  # bought meanwhile by another download
            if credit is None:
                credit = await self._buy(gateway)
        return credit

    def reserve(self, credit: HeldCredit, amount_msat: int) -> None:
        """A spend of ``amount_msat`` is being sent."""
        credit.in_flight_msat += amount_msat

    async def spent(
        self, credit: HeldCredit, reserved_msat: int, spent_msat: int, remaining_msat: int
    ) -> None:
        """A spend reserved with :meth:`reserve` went through for ``spent_msat``; the
        gateway says ``credit`` holds ``remaining_msat``. Each answer is the balance after
        every spend committed before it, so the lowest seen is the latest (answers to
        concurrent spends may arrive out of order)."""
        credit.in_flight_msat -= reserved_msat
        credit.remaining_msat = max(0, min(credit.remaining_msat, remaining_msat))
        log.debug("spent %d msat of credit, %d left", spent_msat, credit.remaining_msat)
        self._save_balances_soon()
        self._maybe_top_up(credit.gateway)

    async def refused(
        self, credit: HeldCredit, amount_msat: int, remaining_msat: int | None
    ) -> None:
        """The gateway refused the spend: ``credit`` holds ``remaining_msat`` (None: it is
        of no use there)."""
        credit.in_flight_msat -= amount_msat
        left = 0 if remaining_msat is None else max(0, remaining_msat)
        credit.remaining_msat = min(credit.remaining_msat, left)
        self._save_balances_soon()
        self._maybe_top_up(credit.gateway)

    def _maybe_top_up(self, gateway: str) -> None:
        if self.amount_msat <= 0 or self._c.payer is None:
            return
        if self.total(gateway) >= self.topup_below_msat:
            return
        running = self._topups.get(gateway)
        if running is not None and not running.done():
            return
        self._topups[gateway] = asyncio.create_task(self._top_up(gateway), name="credit-top-up")

    async def _top_up(self, gateway: str) -> None:
        try:
            async with self._lock:
                if self.total(gateway) < self.topup_below_msat:
                    await self._buy(gateway)
        except ClientError as exc:  # downloads fall back to invoices meanwhile
            log.warning("could not top up credit at %s: %s", gateway, exc)

    def _save_balances_soon(self) -> None:
        """The balances written within BALANCE_SAVE_DELAY_S, one write for the spends
        made meanwhile (a crash before it leaves a stale balance: the gateway corrects it)."""
        self._balances_dirty = True
        if self._balances_saver is None or self._balances_saver.done():
            self._balances_saver = asyncio.create_task(self._save_balances(), name="credit-save")

    async def _save_balances(self) -> None:
        while self._balances_dirty:
            with contextlib.suppress(TimeoutError):  # close() cuts the wait short
                await asyncio.wait_for(self._closing.wait(), BALANCE_SAVE_DELAY_S)
            self._balances_dirty = False  # spends during the write get another one
            await self._save()

    async def close(self) -> None:
        """Waits for top-ups under way (a payment in flight cannot be recalled, and its
        token must reach the credit file), then for the balances' write."""
        tasks = [t for t in self._topups.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._closing.set()
        if self._balances_saver is not None:
            await self._balances_saver

    # --- buying ----------------------------------------------------------------------

    async def _buy(self, gateway: str) -> HeldCredit:
        amount = self.amount_msat
        payer = self._c.payer
        assert payer is not None
        reply = await self._c._request(
            "POST",
            f"{gateway}/v1/credit",
            ok=(),
            allow_402=True,
            json_body={"amount_msat": amount},
        )
        try:
            challenge = parse_challenge(reply.headers.getall("WWW-Authenticate", []))
        except ChallengeError as exc:
            raise GatewayError(402, "Payment required", str(exc)) from None
        problem = reply.problem()
        until = problem.get("valid_until")
        if problem.get("amount_msat") != amount or not _is_count(until):
            raise PaymentRefused(
                "the gateway's credit offer is not for the amount asked; nothing was paid"
            )
        if not is_credit_macaroon(challenge.macaroon):
            raise PaymentRefused("the gateway offered no credit token; nothing was paid")
        check_invoice_amount(challenge.invoice, amount)  # the payer checks it too
        credit = HeldCredit(gateway, challenge.macaroon, challenge.invoice, amount, amount, until)
        held = await self._held()
        held.append(credit)
        await self._save()  # on disk before any money moves
        try:
            credit.preimage = await payer.pay(challenge.invoice, amount)
        except PaymentRefused:
            held.remove(credit)  # nothing was paid
            await self._save()
            raise
        self.bought_msat += amount
        await self._save()
        log.debug("bought credit at %s", gateway)
        return credit
