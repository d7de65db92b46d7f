"""lightning.bolt11: amounts from the examples of the BOLT 11 specification."""

from __future__ import annotations

import pytest

from lightning.bolt11 import check_invoice, invoice_amount_msat

# From BOLT 11 "Examples" (lightning/bolts, 11-payment-encoding.md).
DONATION = (
    "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5k"
    "getjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq8rkx3yf5tcsyz3d73gafnh3cax9rn449d9p5uxz9ezhhypd"
    "0elx87sjle52x86fux2ypatgddc6k63n7erqz25le42c4u4ecky03ylcqca784w"
)
COFFEE = (
    "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7en"
    "xv4jsxqzpuaztrnwngzn3kdzw5hydlzf03qdgm2hdq27cqv3agm2awhz5se903vruatfhq77w3ls4evs3ch9zw97j2"
    "5emudupq63nyw24cg27h2rspfj9srp"
)
NONSENSE = (
    "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wl"
    "rswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2"
    "zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny"
)
HASHED_20M = (
    "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdz"
    "gynm4zwqd5d7xmw5fk98klysy043l2ahrqscc6gd6ql3jrc5yzme8v4ntcewwz5cnw92tz0pc8qcuufvq7khhr8wpa"
    "ld05e92xw006sq94mg8v2ndf4sefvf9sygkshp5zfem29trqq2yxxz7"
)
TESTNET_20M = (
    "lntb20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfq"
    "qqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5d9vax37wxq72un98kmzzhznpurw9sgl2v0"
    "nklu2g4d0keph5t7tj9tcqd8rexnd07ux4uv2cjvcqwaxgj7v4uwn5wmypjd5n69z2xm3xgksg28nwht7f6zspwp3f9t"
)
PICO = (
    "lnbc9678785340p1pwmna7lpp5gc3xfm08u9qy06djf8dfflhugl6p7lgza6dsjxq454gxhj9t7a0sd8dgfkx7cmtw"
    "d68yetpd5s9xar0wfjn5gpc8qhrsdfq24f5ggrxdaezqsnvda3kkum5wfjkzmfqf3jkgem9wgsyuctwdus9xgrcyq"
    "cjcgpzgfskx6eqf9hzqnteypzxz7fzypfhg6trddjhygrcyqezcgpzfysywmm5ypxxjemgw3hxjmn8yptk7untd9h"
    "xwg3q2d6xjcmtv4ezq7pqxgsxzmnyyqcjqmt0wfjjq6t5v4khxxqyjw5qcqp2rzjq0gxwkzc8w6323m55m4jyxcjw"
    "my7stt9hwkwe2qxmy8zpsgg7jcuwz87fcqqeuqqqyqqqqlgqqqqn3qq9qn07ytgrxxzad9hc4xt3mawjjt8znfv8xz"
    "scs7007v9gh9j569lencxa8xeujzkxs0uamak9aln6ez02uunw6rd2ht2sqe4hz8thcdagpleym0j"
)
COFFEE_BEANS = (
    "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpd"
    "eessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqpqsq67gye39hf"
    "g3zd8rgc80k32tvy9xk2xunwm5lzexnvpx6fd77en8qaq424dxgt56cag2dpt359k3ssyhetktkpqh24jqnjyw6uqd"
    "08sgptq44qu"
)

# BOLT 11 "Examples of Invalid Invoices".
BAD_CHECKSUM = NONSENSE[:-1] + "t"
NO_SEPARATOR = NONSENSE[len("lnbc2500u1") :]
MIXED_CASE = "LNBC2500u" + NONSENSE[len("lnbc2500u") :]
TOO_SHORT = (
    "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5k"
    "getjypeh2ursdae8g6na6hlh"
)
BAD_MULTIPLIER = (
    "lnbc2500x1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7en"
    "xv4jsxqzpujr6jxr9gq9pv6g46y7d20jfkegkg4gljz2ea2a3m9lmvvr95tq2s0kvu70u3axgelz3kyvtp2ywwt0y8"
    "hkx2869zq5dll9nelr83zzqqpgl2zg"
)
SUB_MSAT = (
    "lnbc2500000001p1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsy"
    "p3k7enxv4jsxqzpu7hqtk93pkf7sw55rdv4k9z2vj050rxdr6za9ekfs3nlt5lr89jqpdmxsmlj9urqumg0h9wzpqe"
    "cw7th56tdms40p2ny9q4ddvjsedzcplva53s"
)


@pytest.mark.parametrize(
    ("invoice", "msat"),
    [
        (DONATION, None),
        (COFFEE, 2500 * 100_000),  # 2500 µBTC = 250,000 sat
        (NONSENSE, 250_000_000),
        (HASHED_20M, 20 * 100_000_000),
        (TESTNET_20M, 2_000_000_000),
        (PICO, 967_878_534),  # 9678785340 pBTC
        (COFFEE_BEANS, 2_500_000_000),
        (COFFEE_BEANS.upper(), 2_500_000_000),
        ("lightning:" + COFFEE, 250_000_000),
        ("  " + COFFEE + "\n", 250_000_000),
    ],
)
def test_spec_examples(invoice: str, msat: int | None) -> None:
    assert invoice_amount_msat(invoice) == msat


@pytest.mark.parametrize(
    ("invoice", "message"),
    [
        (BAD_CHECKSUM, "checksum"),
        (NO_SEPARATOR, "separator"),
        (MIXED_CASE, "case"),
        (TOO_SHORT, "too short"),
        (BAD_MULTIPLIER, "multiplier"),
        (SUB_MSAT, "millisatoshi"),
        ("", "empty"),
        ("lnbc2500u1 pvjluez", "printable"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "too short"),
    ],
)
def test_invalid_invoices(invoice: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        invoice_amount_msat(invoice)


def _with_hrp(hrp: str) -> str:
    """A well-formed invoice envelope (valid checksum) with another human-readable part."""
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)

    def polymod(values: list[int]) -> int:
        chk = 1
        for v in values:
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i, g in enumerate(generator):
                chk ^= g if (top >> i) & 1 else 0
        return chk

    data = [charset.index(c) for c in COFFEE[len("lnbc2500u1") : -6]]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    mod = polymod([*expanded, *data, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(charset[d] for d in data + checksum)


@pytest.mark.parametrize(
    ("hrp", "msat"),
    [
        ("lnbcrt10u", 1_000_000),
        ("lnbcrt", None),
        ("lntbs3n", 300),
        ("lnsb1", 100_000_000_000),
        ("lntb20p", 2),
        ("lnbc1m", 100_000_000),
    ],
)
def test_networks_and_multipliers(hrp: str, msat: int | None) -> None:
    assert invoice_amount_msat(_with_hrp(hrp)) == msat


@pytest.mark.parametrize("hrp", ["lnxy10u", "bc10u", "lnbc010u", "lnbc0", "lnbc10uu", "lnbc1.5m"])
def test_bad_human_readable_parts(hrp: str) -> None:
    with pytest.raises(ValueError):
        invoice_amount_msat(_with_hrp(hrp))


def test_check_invoice_wants_the_nodes_network_and_an_amount() -> None:
    assert check_invoice(COFFEE, "mainnet", require_amount=True) == (COFFEE, 250_000_000)
    assert check_invoice("lightning:" + COFFEE.upper(), "mainnet", True)[0] == COFFEE
    assert check_invoice(TESTNET_20M, "testnet", True)[1] == 2_000_000_000
    assert check_invoice(DONATION, "mainnet", require_amount=False) == (DONATION, None)
    for invoice, network, message in [
        (COFFEE, "regtest", "another network"),
        (TESTNET_20M, "mainnet", "another network"),
        (DONATION, "mainnet", "must name an amount"),
        (COFFEE, "litecoin", "unknown Lightning network"),
        (BAD_CHECKSUM, "mainnet", "checksum"),
        ("%2e%2e/%2e%2e/v1/getinfo?a=bbbbbbbbbbbbbb", "regtest", "too short"),
        ("lnbcrt1" + "%" * 120, "regtest", "outside the bech32 alphabet"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_invoice(invoice, network, require_amount=True)
