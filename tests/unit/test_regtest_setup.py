"""The regtest set-up that needs no processes."""

from __future__ import annotations

import re
from pathlib import Path

from regtest.lnd_admin import GATEWAY_PERMISSIONS
from regtest.network import router_fee_msat

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_exactly_the_permissions_the_network_bakes() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"lncli bakemacaroon ([a-z:\s]+)`", readme)
    assert match, "README has no bakemacaroon line"
    listed = {tuple(p.split(":")) for p in match.group(1).split()}
    assert listed == set(GATEWAY_PERMISSIONS)


def test_router_fee_is_lnds_formula() -> None:
    # base 1500 msat + 1000 ppm, rounded down
    assert router_fee_msat(0) == 1_500
    assert router_fee_msat(999) == 1_500
    assert router_fee_msat(1_000) == 1_501
    assert router_fee_msat(2_345_678) == 1_500 + 2_345
