"""The amount of a BOLT 11 invoice, read from its human-readable part (pure, no I/O).

Only what the client needs to check that an invoice asks for what the gateway announced:
the bech32 checksum is verified (so a mangled invoice is garbage, not a guess), the
signature is not (the Lightning node checks it when paying).
"""

from __future__ import annotations

import re

__all__ = [
    "NETWORK_PREFIXES",
    "PREFIXES",
    "bech32_checksum",
    "check_invoice",
    "invoice_amount_msat",
]

# Longest first: "lnbcrt" must not be read as "lnbc" followed by an amount "rt...".
PREFIXES = ("lnbcrt", "lntbs", "lnbc", "lntb", "lnsb")

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_CHARS = 6
# Timestamp (7 characters) and signature (104) are mandatory; anything shorter is not an invoice.
_MIN_DATA_CHARS = 7 + 104 + _CHECKSUM_CHARS
_MSAT_PER_BTC = 100_000_000_000
_MSAT_PER_UNIT = {"": _MSAT_PER_BTC, "m": 100_000_000, "u": 100_000, "n": 100}
# 'p' (pico-bitcoin) is a tenth of a millisatoshi, handled apart. 30 digits caps the work.
_AMOUNT_RE = re.compile(r"([1-9][0-9]{0,29})([munp]?)")
_URI_SCHEME = "lightning:"
# The invoice prefix of each network, by the name LND reports in getinfo's `chains`.
NETWORK_PREFIXES = {
    "mainnet": "lnbc",
    "testnet": "lntb",
    "testnet4": "lntb",
    "signet": "lntbs",
    "regtest": "lnbcrt",
    "simnet": "lnsb",
}


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_checksum(hrp: str, data: list[int]) -> list[int]:
    """The six 5-bit checksum values that make ``hrp`` + ``data`` valid bech32 (BIP 173);
    for writing test invoices (lightning/fake.py)."""
    mod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ 1
    return [(mod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_CHARS)]


def _human_readable_part(bolt11: str) -> str:
    """Validate the bech32 envelope (BIP 173, without its 90-character limit); return the HRP."""
    if not isinstance(bolt11, str):
        raise ValueError(f"invoice must be a string, got {type(bolt11).__name__}")
    text = bolt11.strip()
    if text[: len(_URI_SCHEME)].lower() == _URI_SCHEME:
        text = text[len(_URI_SCHEME) :]
    if not text:
        raise ValueError("invoice is empty")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise ValueError("invoice contains characters outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise ValueError("invoice mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1:
        raise ValueError("invoice has no bech32 separator '1'")
    hrp, data = text[:sep], text[sep + 1 :]
    if len(data) < _MIN_DATA_CHARS:
        raise ValueError("invoice is too short")
    try:
        values = [_CHARSET.index(c) for c in data]
    except ValueError:
        raise ValueError("invoice contains characters outside the bech32 alphabet") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("invoice checksum is wrong (mistyped or truncated)")
    return hrp


def invoice_amount_msat(bolt11: str) -> int | None:
    """Amount in millisatoshis, or None for an invoice without an amount.

    Raises ValueError for anything that is not a well-formed invoice of a known network
    (mainnet lnbc, testnet lntb, signet lntbs, regtest lnbcrt, simnet lnsb).
    """
    hrp = _human_readable_part(bolt11)
    prefix = next((p for p in PREFIXES if hrp.startswith(p)), None)
    if prefix is None:
        raise ValueError(f"unknown invoice prefix in {hrp[:12]!r}; expected one of {PREFIXES}")
    amount = hrp[len(prefix) :]
    if not amount:
        return None
    match = _AMOUNT_RE.fullmatch(amount)
    if match is None:
        raise ValueError(
            f"invoice amount {amount[:32]!r} is not a number with a multiplier m/u/n/p"
        )
    number, multiplier = int(match.group(1)), match.group(2)
    if multiplier == "p":
        # BOLT 11: sub-millisatoshi amounts cannot be paid, so 'p' amounts end in 0.
        if number % 10:
            raise ValueError("invoice amount in pico-bitcoin is not a whole millisatoshi")
        return number // 10
    return number * _MSAT_PER_UNIT[multiplier]


def check_invoice(bolt11: str, network: str, require_amount: bool) -> tuple[str, int | None]:
    """Checks an invoice someone hands us before any Lightning node sees it: bech32
    alphabet and checksum, the prefix of `network` (an LND network name), and a positive
    amount when `require_amount`. Returns the invoice in canonical form (lower case, no
    `lightning:` scheme) and its amount in msat; raises ValueError saying what is wrong."""
    amount = invoice_amount_msat(bolt11)
    text = bolt11.strip()
    if text[: len(_URI_SCHEME)].lower() == _URI_SCHEME:
        text = text[len(_URI_SCHEME) :]
    text = text.lower()
    expected = NETWORK_PREFIXES.get(network)
    if expected is None:
        raise ValueError(f"unknown Lightning network {network!r}")
    prefix = next(p for p in PREFIXES if text.startswith(p))
    if prefix != expected:
        raise ValueError(f"the invoice is for another network: {prefix}…, this node is {network}")
    if require_amount and not amount:
        raise ValueError("the invoice must name an amount")
    return text, amount
