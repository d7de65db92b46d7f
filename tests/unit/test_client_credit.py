"""The client's credit wallet (client/credit.py) against a scripted gateway: what it pays,
what it refuses to pay, and what it keeps on disk. The real gateway and LND are in
tests/integration/test_credit.py."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import client.cli
import l402
from client.cli import _config_named, main
from client.config import CONFIG_ENV, ClientConfig
from client.credit import CreditWallet, HeldCredit, default_credit_path
from client.errors import PaymentRefused
from client.http import _Reply
from client.payer import check_invoice_amount
from l402.macaroon import to_base64
from lightning.fake import fake_bolt11

GATEWAY = "http://gw.test"
NOW = 2_000_000_000


class Payer:
    def __init__(self) -> None:
        self.paid: list[int] = []

    async def pay(self, bolt11: str, expected_msat: int) -> bytes:
        check_invoice_amount(bolt11, expected_msat)  # as LndPayer does
        self.paid.append(expected_msat)
        return os.urandom(32)


class Gateway:
    """Answers POST /v1/credit with a 402 for ``invoice_msat`` (the amount asked unless
    told otherwise) and a credit macaroon (or a chunk one)."""

    def __init__(self, credit: int = 50_000, invoice_msat: int | None = None) -> None:
        self.config = ClientConfig(gateway_url=GATEWAY, credit_msat=credit)
        self.payer: Payer | None = Payer()
        self.invoice_msat = invoice_msat
        self.credit_macaroon = True

    async def _request(
        self,
        method: str,
        url: str,
        *,
        ok: Collection[int],
        allow_402: bool = False,
        data: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        limit: int = 0,
        into: bytearray | memoryview | None = None,
        attempts: int | None = None,
    ) -> _Reply:
        assert (method, url) == ("POST", f"{GATEWAY}/v1/credit")
        amount = json_body["amount_msat"]
        payment_hash = os.urandom(32)
        mac = (
            l402.mint_credit(os.urandom(32), payment_hash, "default", NOW)
            if self.credit_macaroon
            else l402.mint_token(os.urandom(32), payment_hash, "f", 0, 0, NOW)
        )
        invoice = fake_bolt11(self.invoice_msat or amount, payment_hash, NOW - 10)
        body = {"amount_msat": amount, "valid_until": NOW, "invoice": invoice}
        headers_out: CIMultiDict[str] = CIMultiDict()
        for value in l402.format_challenge(to_base64(mac), invoice):
            headers_out.add("WWW-Authenticate", value)
        return _Reply(
            402, "Payment Required", CIMultiDictProxy(headers_out), json.dumps(body).encode(), False
        )


async def test_buys_once_keeps_the_token_private_and_reads_it_back(tmp_path: Path) -> None:
    gw = Gateway()
    path = tmp_path / "state" / "credit.json"
    wallet = CreditWallet(gw, path)
    credit = await wallet.ready(GATEWAY)
    assert credit is not None and credit.preimage is not None
    assert await wallet.ready(GATEWAY) is credit  # held: not bought again
    assert gw.payer is not None and gw.payer.paid == [50_000]
    assert path.stat().st_mode & 0o777 == 0o600
    again = CreditWallet(gw, path)
    held = await again.usable(GATEWAY)
    assert held is not None and held.preimage == credit.preimage
    assert await again.usable("http://elsewhere.test") is None


async def test_refuses_an_invoice_for_another_amount_or_a_non_credit_token(
    tmp_path: Path,
) -> None:
    gw = Gateway(invoice_msat=60_000)
    with pytest.raises(PaymentRefused):
        await CreditWallet(gw, tmp_path / "c.json").ready(GATEWAY)
    gw = Gateway()
    gw.credit_macaroon = False
    with pytest.raises(PaymentRefused, match="no credit token"):
        await CreditWallet(gw, tmp_path / "d.json").ready(GATEWAY)
    assert gw.payer is not None and gw.payer.paid == []


async def test_spends_and_refusals_track_the_gateway_and_top_up_below_a_quarter(
    tmp_path: Path,
) -> None:
    gw = Gateway(credit=40_000)
    wallet = CreditWallet(gw, tmp_path / "credit.json")
    credit = await wallet.ready(GATEWAY)
    assert credit is not None
    wallet.reserve(credit, 8_000)
    wallet.reserve(credit, 4_000)
    assert credit.available_msat == 28_000
    # Answers out of order: the lowest balance reported is the latest.
    await wallet.spent(credit, 4_000, 4_000, 28_000)
    await wallet.spent(credit, 8_000, 8_000, 32_000)
    assert (credit.remaining_msat, credit.in_flight_msat) == (28_000, 0)
    wallet.reserve(credit, 25_000)
    await wallet.refused(credit, 25_000, 9_000)  # spent elsewhere: below a quarter now
    assert credit.remaining_msat == 9_000
    await wallet.close()  # the background top-up, awaited
    assert gw.payer is not None and gw.payer.paid == [40_000, 40_000]
    best = await wallet.usable(GATEWAY, min_msat=10_000)
    assert best is not None and best.remaining_msat == 40_000


async def test_a_downloads_spends_share_one_write_of_the_balance_and_close_flushes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "credit.json"
    wallet = CreditWallet(Gateway(credit=40_000), path)
    credit = await wallet.ready(GATEWAY)
    assert credit is not None
    writes: list[list[int]] = []
    real_write = wallet._write

    def counted(snapshot: list[dict[str, Any]]) -> None:
        writes.append([c["remaining_msat"] for c in snapshot])
        real_write(snapshot)

    monkeypatch.setattr(wallet, "_write", counted)

    def on_disk() -> int:
        return int(json.loads(path.read_text())["credits"][0]["remaining_msat"])

    for left in (39_000, 38_000, 37_000):
        wallet.reserve(credit, 1_000)
        await wallet.spent(credit, 1_000, 1_000, left)
    assert writes == [] and on_disk() == 40_000  # not yet: no fsync per spend
    await wallet.close()  # cuts the delay short
    assert writes == [[37_000]] and on_disk() == 37_000
    # A crash before the write leaves the older balance: a hint the gateway corrects.
    wallet.reserve(credit, 1_000)
    await wallet.refused(credit, 1_000, 30_000)
    await wallet.close()
    assert on_disk() == 30_000


def test_held_credit_json_is_read_strictly() -> None:
    credit = HeldCredit(GATEWAY, "AgEE", "lnbcrt1", 10, 5, NOW, b"\x01" * 32)
    assert HeldCredit.from_json(credit.to_json()) == credit
    cases: list[object] = [
        {**credit.to_json(), "remaining_msat": 11},
        {**credit.to_json(), "preimage": "zz"},
        {**credit.to_json(), "macaroon": 'a"b'},
        {**credit.to_json(), "amount_msat": True},
        [],
    ]
    for broken in cases:
        with pytest.raises(ValueError):
            HeldCredit.from_json(broken)


def test_credit_is_kept_beside_the_config_named_by_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env" / "client.json"))
    assert default_credit_path() == tmp_path / "env" / "credit.json"
    # While a command given --config runs, credit goes beside that file: two configurations
    # on one machine keep their credit apart.
    config = tmp_path / "device-b" / "client.json"
    with _config_named(str(config)):
        assert default_credit_path() == tmp_path / "device-b" / "credit.json"
    assert default_credit_path() == tmp_path / "env" / "credit.json"
    # main() uses it, and leaves the environment as it found it.
    seen: list[Path] = []
    monkeypatch.setattr(client.cli, "_cmd_get", lambda args: seen.append(default_credit_path()))
    main(["get", "http://127.0.0.1:1/f/x", "--config", str(config)])
    assert seen == [tmp_path / "device-b" / "credit.json"]
    assert os.environ[CONFIG_ENV] == str(tmp_path / "env" / "client.json")
