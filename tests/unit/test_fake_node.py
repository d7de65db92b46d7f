"""lightning.fake.FakeNode behaves as the LightningNode contract says, so tests built on it
mean something; and the client's payer works through any LightningNode."""

from __future__ import annotations

import hashlib

import pytest

from client.errors import PaymentRefused
from client.payer import LndPayer
from lightning.bolt11 import invoice_amount_msat
from lightning.errors import LightningError, LightningUnavailable, PaymentFailed
from lightning.fake import FakeNetwork, FakeNode
from lightning.models import InvoiceState


@pytest.mark.parametrize("amount", [1, 7, 2_000, 123_456_789, 100_000_000, 0])
async def test_invoices_carry_their_amount_in_valid_bech32(amount: int) -> None:
    invoice = await FakeNode().create_invoice(amount, "x")
    assert invoice_amount_msat(invoice.bolt11) == (amount or None)
    assert invoice.bolt11.startswith("lnbcrt")


async def test_pay_settles_once_with_the_real_preimage() -> None:
    net = FakeNetwork()
    payee, payer = FakeNode(net, "a"), FakeNode(net, "b", fee_msat=5)
    invoice = await payee.create_invoice(10_000, "x")
    payment = await payer.pay_invoice(invoice.bolt11, fee_limit_msat=10)
    assert hashlib.sha256(payment.preimage).digest() == invoice.payment_hash
    assert payment.fee_msat == 5
    settled = await payee.lookup_invoice(invoice.payment_hash)
    assert (settled.state, settled.settle_index, settled.preimage) == (
        InvoiceState.SETTLED,
        1,
        payment.preimage,
    )
    assert (await payer.track_payment(invoice.payment_hash)).state == "succeeded"
    with pytest.raises(PaymentFailed, match="already paid"):
        await payer.pay_invoice(invoice.bolt11, fee_limit_msat=10)


async def test_failures_on_demand() -> None:
    net = FakeNetwork()
    payee, payer = FakeNode(net, "a"), FakeNode(net, "b")
    invoice = await payee.create_invoice(10_000, "x")
    payer.fail_payments = "no route"
    with pytest.raises(PaymentFailed, match="no route"):
        await payer.pay_invoice(invoice.bolt11, fee_limit_msat=10)
    assert (await payer.track_payment(invoice.payment_hash)).state == "failed"
    assert (await payee.lookup_invoice(invoice.payment_hash)).state == InvoiceState.OPEN
    payer.unavailable = True
    with pytest.raises(LightningUnavailable):
        await payer.get_info()
    with pytest.raises(LightningError):
        await payee.decode_invoice("lnbcrt1notours")


async def test_stream_replays_after_the_settle_index_then_goes_live() -> None:
    node = FakeNode()
    first = await node.create_invoice(1_000, "a")
    second = await node.create_invoice(2_000, "b")
    node.settle(first.payment_hash)
    stream = node.subscribe_invoices(add_index=2, settle_index=0)
    replayed = await anext(stream)
    assert (replayed.payment_hash, replayed.state) == (first.payment_hash, InvoiceState.SETTLED)
    node.settle(second.payment_hash)
    live = await anext(stream)
    assert (live.payment_hash, live.settle_index) == (second.payment_hash, 2)
    await stream.aclose()


async def test_client_payer_refuses_a_wrong_amount_before_paying() -> None:
    net = FakeNetwork()
    payee = FakeNode(net, "gateway")
    payer = LndPayer(FakeNode(net, "payer"), max_fee_msat=1_000)
    invoice = await payee.create_invoice(3_000, "chunks")
    with pytest.raises(PaymentRefused, match="announced"):
        await payer.pay(invoice.bolt11, 2_000)
    assert (await payee.lookup_invoice(invoice.payment_hash)).state == InvoiceState.OPEN
    preimage = await payer.pay(invoice.bolt11, 3_000)
    assert hashlib.sha256(preimage).digest() == invoice.payment_hash
    assert (payer.paid_msat, payer.payments) == (3_000, 1)
