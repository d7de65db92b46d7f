"""The regtest set-up that needs no processes."""

from __future__ import annotations

from regtest.network import router_fee_msat


def test_router_fee_is_lnds_formula() -> None:
    # base 1500 msat + 1000 ppm, rounded down
    assert router_fee_msat(0) == 1_500
    assert router_fee_msat(999) == 1_500
    assert router_fee_msat(1_000) == 1_501
    assert router_fee_msat(2_345_678) == 1_500 + 2_345
