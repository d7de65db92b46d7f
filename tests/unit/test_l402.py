"""Tests for l402: identifiers, caveat rules, headers and credential checks."""

from __future__ import annotations

import base64
import hashlib

import pytest

from l402 import (
    AccessRequest,
    Caveat,
    Credential,
    L402Error,
    TokenId,
    TokenRejected,
    build_caveats,
    check_caveats,
    format_challenge,
    identifier_of,
    parse_authorization,
    parse_caveat,
    verify_credential,
)
from l402.macaroon import Macaroon, add_caveat, from_base64, mint, serialize_v2, to_base64

ROOT_KEY = bytes(range(32))
PREIMAGE = bytes.fromhex("49349dfea4abed3cd14f6d356afa83de9787b609f088c8df09bacc7b4bd21b39")
PAYMENT_HASH = hashlib.sha256(PREIMAGE).digest()
TOKEN = TokenId(0, PAYMENT_HASH, b"\x07" * 32)
FILE_ID = "bafybeigdyrztxyz"
NOW = 1_700_000_000
VALID_UNTIL = NOW + 3600
REQUEST = AccessRequest(FILE_ID, chunk_index=5, now=NOW)

# Minted by Aperture; from the lsat-js test data ("aperture originated challenge").
APERTURE_MACAROON = (
    "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0+tVY+tKPYAJ/zSfmEGlIpNm3VzxuzCqLhEp5KGiyPLUM9L+"
    "kcB7uzS+AAIPc2VydmljZXM9bWVtZTowAAISbWVtZV9jYXBhYmlsaXRpZXM9AAAGILA1VCEIExukt4nG+XR9tX8WJ2BV"
    "MiHG3UNt1uYJ+NRD"
)


def issue(caveats: list[Caveat] | None = None, root_key: bytes = ROOT_KEY) -> Macaroon:
    m = mint(root_key, TOKEN.encode())
    for c in build_caveats(FILE_ID, 0, 9, VALID_UNTIL) if caveats is None else caveats:
        m = add_caveat(m, c.encode())
    return m


def narrow(m: Macaroon, *caveats: Caveat) -> Macaroon:
    for c in caveats:
        m = add_caveat(m, c.encode())
    return m


def cred(*macs: Macaroon, preimage: bytes = PREIMAGE) -> Credential:
    return Credential(tuple(macs), preimage)


# --- TokenId --------------------------------------------------------------


def test_token_id_round_trip() -> None:
    raw = TOKEN.encode()
    assert len(raw) == 66
    assert raw[:2] == b"\x00\x00"
    assert raw[2:34] == PAYMENT_HASH
    assert TokenId.decode(raw) == TOKEN


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x00\x00" + b"x" * 63, b"\x00\x00" + b"x" * 65])
def test_token_id_wrong_length(raw: bytes) -> None:
    with pytest.raises(L402Error, match=r"short|length"):
        TokenId.decode(raw)


def test_token_id_unknown_version() -> None:
    with pytest.raises(L402Error, match="version"):
        TokenId.decode(b"\x00\x01" + b"x" * 64)
    with pytest.raises(L402Error, match="version"):
        TokenId(1, PAYMENT_HASH, b"\x07" * 32).encode()
    with pytest.raises(L402Error):
        TokenId(0, b"short", b"\x07" * 32).encode()


def test_aperture_identifier_decodes() -> None:
    token = TokenId.decode(from_base64(APERTURE_MACAROON).identifier)
    assert token.version == 0
    assert token.payment_hash.hex() == (
        "30a47a6e9b0b3ab9f4280f08932cd7207b440f508580d3eb5563eb4a3d8009ff"
    )


# --- caveats --------------------------------------------------------------


def test_caveat_encode_and_parse() -> None:
    assert Caveat("bitcache_file", "abc").encode() == b"bitcache_file=abc"
    assert parse_caveat(b"k=v=w") == Caveat("k", "v=w")
    assert parse_caveat(b"meme_capabilities=") == Caveat("meme_capabilities", "")
    with pytest.raises(L402Error, match="condition=value"):
        parse_caveat(b"no equals sign")
    with pytest.raises(L402Error, match="UTF-8"):
        parse_caveat(b"k=\xff")


def test_build_caveats() -> None:
    assert build_caveats("f1", 2, 7, 1234) == [
        Caveat("services", "bitcache:0"),
        Caveat("bitcache_file", "f1"),
        Caveat("bitcache_chunks", "2-7"),
        Caveat("bitcache_valid_until", "1234"),
    ]
    for args in [("", 0, 1, 1), ("f", -1, 1, 1), ("f", 3, 2, 1), ("f", 0, 1, -1)]:
        with pytest.raises(ValueError):
            build_caveats(*args)


def base() -> list[Caveat]:
    return build_caveats(FILE_ID, 0, 9, VALID_UNTIL)


def test_check_caveats_accepts_a_valid_grant() -> None:
    check_caveats(base(), REQUEST)
    check_caveats(base(), AccessRequest(FILE_ID, 0, NOW))
    check_caveats(base(), AccessRequest(FILE_ID, 9, VALID_UNTIL - 1))


@pytest.mark.parametrize(
    ("extra", "request_", "reason"),
    [
        ([], AccessRequest("other-file", 5, NOW), "file"),
        ([], AccessRequest(FILE_ID, 10, NOW), "chunk"),
        ([], AccessRequest(FILE_ID, -1, NOW), "chunk"),
        ([], AccessRequest(FILE_ID, 5, VALID_UNTIL), "expired"),
        ([], AccessRequest(FILE_ID, 5, VALID_UNTIL + 1), "expired"),
        ([Caveat("bitcache_chunks", "0-10")], REQUEST, "widens"),
        ([Caveat("bitcache_chunks", "6-8")], REQUEST, "chunk"),
        ([Caveat("bitcache_valid_until", str(VALID_UNTIL + 1))], REQUEST, "extends"),
        ([Caveat("bitcache_valid_until", str(NOW))], REQUEST, "expired"),
        ([Caveat("bitcache_file", "other-file")], REQUEST, "file"),
        ([Caveat("services", "bitcache:0,loop:0")], REQUEST, "widens"),
        ([Caveat("services", "loop:0")], REQUEST, "widens"),
        ([Caveat("bitcache_capabilities", "all")], REQUEST, "unknown"),
        ([Caveat("BITCACHE_File", FILE_ID)], REQUEST, "unknown"),
        ([Caveat("bitcache_chunks", "5")], REQUEST, "malformed"),
        ([Caveat("bitcache_chunks", "7-5")], REQUEST, "malformed"),
        ([Caveat("bitcache_chunks", " 1-5")], REQUEST, "malformed"),
        ([Caveat("bitcache_chunks", "\u0661-5")], REQUEST, "malformed"),
        ([Caveat("bitcache_valid_until", "-1")], REQUEST, "malformed"),
        ([Caveat("bitcache_valid_until", "1e9")], REQUEST, "malformed"),
        ([Caveat("services", "bitcache")], REQUEST, "malformed"),
        ([Caveat("services", "")], REQUEST, "malformed"),
    ],
)
def test_check_caveats_rejections(
    extra: list[Caveat], request_: AccessRequest, reason: str
) -> None:
    with pytest.raises(TokenRejected, match=reason) as info:
        check_caveats(base() + extra, request_)
    assert reason in info.value.reason


def test_narrowing_caveats_are_accepted() -> None:
    caveats = [
        *base(),
        Caveat("bitcache_chunks", "3-6"),
        Caveat("bitcache_chunks", "5-5"),
        Caveat("bitcache_valid_until", str(NOW + 10)),
        Caveat("bitcache_file", FILE_ID),
        Caveat("services", "bitcache:0"),
    ]
    check_caveats(caveats, REQUEST)


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("services", "bitcache service"),
        ("bitcache_file", "lacks"),
        ("bitcache_chunks", "lacks"),
        ("bitcache_valid_until", "lacks"),
    ],
)
def test_each_required_caveat_must_be_present(missing: str, reason: str) -> None:
    caveats = [c for c in base() if c.key != missing]
    with pytest.raises(TokenRejected, match=reason):
        check_caveats(caveats, REQUEST)


def test_services_must_list_bitcache() -> None:
    caveats = [Caveat("services", "loop:0"), *base()[1:]]
    with pytest.raises(TokenRejected, match="bitcache service"):
        check_caveats(caveats, REQUEST)
    check_caveats([Caveat("services", "loop:0,bitcache:0"), *base()[1:]], REQUEST)


def test_other_services_caveats_are_ignored() -> None:
    caveats = [*base(), Caveat("loop_capabilities", "x"), Caveat("preimage", "00"), Caveat("", "")]
    check_caveats(caveats, REQUEST)


# --- challenge ------------------------------------------------------------


def test_format_challenge_matches_aperture() -> None:
    mac = to_base64(issue())
    assert format_challenge(mac, "lnbcrt10n1abc") == [
        f'LSAT macaroon="{mac}", invoice="lnbcrt10n1abc"',
        f'L402 macaroon="{mac}", invoice="lnbcrt10n1abc"',
    ]


@pytest.mark.parametrize(
    ("mac", "invoice"),
    [('a"b', "lnbc1"), ("abc", 'ln"bc'), ("abc", "lnbc\r\nX-Evil: 1"), ("", "lnbc1"), ("abc", "")],
)
def test_format_challenge_rejects_header_injection(mac: str, invoice: str) -> None:
    with pytest.raises(L402Error):
        format_challenge(mac, invoice)


# --- authorization header -------------------------------------------------


def header(scheme: str = "L402", mac: str | None = None, preimage: str | None = None) -> str:
    mac = to_base64(issue()) if mac is None else mac
    preimage = PREIMAGE.hex() if preimage is None else preimage
    return f"{scheme} {mac}:{preimage}"


@pytest.mark.parametrize("scheme", ["L402", "LSAT", "l402", "lsat", "LsAt"])
def test_parse_authorization_schemes(scheme: str) -> None:
    c = parse_authorization([header(scheme)])
    assert c.macaroons == (issue(),)
    assert c.preimage == PREIMAGE


def test_parse_authorization_base64_variants() -> None:
    raw = serialize_v2(issue())
    for text in (
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert parse_authorization([header(mac=text)]).macaroons == (issue(),)


def test_parse_authorization_uppercase_preimage_hex() -> None:
    assert parse_authorization([header(preimage=PREIMAGE.hex().upper())]).preimage == PREIMAGE


def test_parse_authorization_multiple_values() -> None:
    values = ["Basic dXNlcjpwYXNz", "Bearer abc", header("LSAT"), header("L402")]
    assert parse_authorization(values).macaroons == (issue(),)
    # A malformed L402 value is skipped in favour of a later valid one.
    assert parse_authorization([header(mac="!!!"), header()]).preimage == PREIMAGE


def test_parse_authorization_several_macaroons() -> None:
    a, b = to_base64(issue()), to_base64(issue([]))
    c = parse_authorization([header(mac=f"{a},{b}")])
    assert c.macaroons == (issue(), issue([]))


def test_parse_authorization_aperture_macaroon() -> None:
    c = parse_authorization([header("LSAT", mac=APERTURE_MACAROON)])
    assert c.macaroons[0].caveats == (b"services=meme:0", b"meme_capabilities=")


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["Basic dXNlcjpwYXNz"],
        ["L402"],
        ["L402 "],
        ["L402 garbage"],
        ["L402 :" + "ab" * 32],
        ["L402 !!!:" + "ab" * 32],
        ["L402 AAAA:" + "ab" * 32],
        ["L402x " + "AAAA:" + "ab" * 32],
        ["L402 " + "A" * 200_000 + ":" + "ab" * 32],
    ],
)
def test_parse_authorization_garbage(values: list[str]) -> None:
    with pytest.raises(L402Error):
        parse_authorization(values)


@pytest.mark.parametrize(
    "preimage",
    ["ab" * 31 + "a", "ab" * 33, "zz" * 32, "ab" * 31 + " a", "", "ab" * 16 + " " + "ab" * 16],
)
def test_parse_authorization_bad_preimage_is_not_echoed(preimage: str) -> None:
    with pytest.raises(L402Error) as info:
        parse_authorization([header(preimage=preimage)])
    if preimage.strip():
        assert preimage.strip() not in str(info.value)


def test_errors_never_echo_a_valid_preimage() -> None:
    with pytest.raises(L402Error) as info:
        parse_authorization([header(mac="AAAA")])
    assert PREIMAGE.hex() not in str(info.value)
    assert PREIMAGE.hex() not in repr(parse_authorization([header()]))


# --- full verification ----------------------------------------------------


def test_verify_credential_accepts_a_paid_token() -> None:
    c = parse_authorization([header()])
    assert identifier_of(c) == TOKEN.encode()
    assert verify_credential(c, ROOT_KEY, REQUEST) == TOKEN


def test_verify_credential_wrong_preimage() -> None:
    with pytest.raises(TokenRejected, match="preimage"):
        verify_credential(cred(issue(), preimage=b"\x00" * 32), ROOT_KEY, REQUEST)


def test_verify_credential_wrong_root_key() -> None:
    with pytest.raises(TokenRejected, match="signature"):
        verify_credential(cred(issue()), b"\x01" * 32, REQUEST)


def test_verify_credential_requires_exactly_one_macaroon() -> None:
    for c in (cred(), cred(issue(), issue())):
        with pytest.raises(TokenRejected, match="exactly one"):
            verify_credential(c, ROOT_KEY, REQUEST)
        with pytest.raises(TokenRejected, match="exactly one"):
            identifier_of(c)


def test_verify_credential_tampered_caveats() -> None:
    m = issue()
    widened = tuple(
        b"bitcache_chunks=0-99" if cav.startswith(b"bitcache_chunks=") else cav for cav in m.caveats
    )
    for caveats in (
        widened,
        m.caveats[:-1],  # removed valid_until
        (*m.caveats, b"bitcache_chunks=5-5"),  # appended without re-signing
    ):
        forged = Macaroon(m.location, m.identifier, caveats, m.signature)
        with pytest.raises(TokenRejected, match="signature"):
            verify_credential(cred(forged), ROOT_KEY, REQUEST)


def test_verify_credential_holder_can_narrow() -> None:
    m = narrow(
        issue(), Caveat("bitcache_chunks", "4-6"), Caveat("bitcache_valid_until", str(NOW + 5))
    )
    assert verify_credential(cred(m), ROOT_KEY, REQUEST) == TOKEN
    with pytest.raises(TokenRejected, match="chunk"):
        verify_credential(cred(m), ROOT_KEY, AccessRequest(FILE_ID, 7, NOW))
    with pytest.raises(TokenRejected, match="expired"):
        verify_credential(cred(m), ROOT_KEY, AccessRequest(FILE_ID, 5, NOW + 5))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (Caveat("bitcache_chunks", "0-20"), "widens"),
        (Caveat("bitcache_valid_until", str(VALID_UNTIL + 60)), "extends"),
        (Caveat("bitcache_file", "other"), "file"),
        (Caveat("bitcache_mode", "x"), "unknown"),
    ],
)
def test_verify_credential_rejects_widening_even_when_signed(extra: Caveat, reason: str) -> None:
    # Properly chained (the holder can always append), but it must not widen.
    with pytest.raises(TokenRejected, match=reason):
        verify_credential(cred(narrow(issue(), extra)), ROOT_KEY, REQUEST)


def test_verify_credential_request_outside_grant() -> None:
    c = cred(issue())
    for request, reason in (
        (AccessRequest("other", 5, NOW), "file"),
        (AccessRequest(FILE_ID, 10, NOW), "chunk"),
        (AccessRequest(FILE_ID, 5, VALID_UNTIL), "expired"),
    ):
        with pytest.raises(TokenRejected, match=reason):
            verify_credential(c, ROOT_KEY, request)


def test_verify_credential_bad_identifier_and_caveat_encoding() -> None:
    m = add_caveat(mint(ROOT_KEY, b"not a token id"), b"services=bitcache:0")
    with pytest.raises(TokenRejected, match="identifier"):
        verify_credential(cred(m), ROOT_KEY, REQUEST)
    m = narrow(issue(), Caveat("x", "y"))
    m = add_caveat(m, b"\xff\xfe")
    with pytest.raises(TokenRejected, match="UTF-8"):
        verify_credential(cred(m), ROOT_KEY, REQUEST)


def test_verify_credential_aperture_macaroon_with_foreign_preimage() -> None:
    preimage = "2ca931a1c36b48f54948b898a271a53ed91ff7d0081939a5fa511249e81cba5c"
    c = parse_authorization([f"LSAT {APERTURE_MACAROON}:{preimage}"])
    with pytest.raises(TokenRejected, match="preimage"):
        verify_credential(c, ROOT_KEY, REQUEST)
