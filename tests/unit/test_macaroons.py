"""Tests for l402.macaroon: go-macaroon V2 binary compatibility and the HMAC chain."""

from __future__ import annotations

import base64
import random

import pytest

from l402.macaroon import (
    MAX_CAVEATS,
    MAX_SIZE,
    Macaroon,
    MacaroonError,
    add_caveat,
    deserialize,
    from_base64,
    mint,
    serialize_v2,
    to_base64,
    verify_signature,
)

# libmacaroons language-independent verifier vectors (rescrv/libmacaroons,
# test/unit/caveat_v2_1.vtest and caveat_v2_4.vtest): binary V2, URL-safe base64
# without padding, root key "this is the key" passed to macaroon_create.
LIBMACAROONS_KEY = b"this is the key"
LIBMACAROONS_ONE_CAVEAT = (
    "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAhRhY2NvdW50ID0gMzczNTkyODU1OQAABiD1SAf23G7fiL8Pcwaz"
    "giVio2JTPb9zObphdl2kvSWdhw"
)
LIBMACAROONS_TWO_CAVEATS = (
    "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAhRhY2NvdW50ID0gMzczNTkyODU1OQACDHVzZXIgPSBhbGljZQAA"
    "BiBL6WfNHqDGsmuvakqU7psFsViG2guoXoxCqTyNDhJe_A"
)

# A macaroon minted by Aperture (location "lsat", services=meme:0), from the
# "aperture originated challenge" fixture of the lsat-js test data; its payment
# hash is 30a47a6e...09ff. The root key is not public, so decode/re-encode only.
APERTURE_MACAROON = (
    "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0+tVY+tKPYAJ/zSfmEGlIpNm3VzxuzCqLhEp5KGiyPLUM9L+"
    "kcB7uzS+AAIPc2VydmljZXM9bWVtZTowAAISbWVtZV9jYXBhYmlsaXRpZXM9AAAGILA1VCEIExukt4nG+XR9tX8WJ2BV"
    "MiHG3UNt1uYJ+NRD"
)
APERTURE_PAYMENT_HASH = "30a47a6e9b0b3ab9f4280f08932cd7207b440f508580d3eb5563eb4a3d8009ff"

# go-macaroon's marshal_test.go TestMarshalBinaryRoundTrip: the libmacaroons README
# macaroon with a third-party caveat (location + vid), which we must refuse.
GO_THIRD_PARTY_VECTOR = b"".join(
    [
        b"\x02",
        b"\x01\x0ehttp://mybank/",
        b"\x02\x1cwe used our other secret key",
        b"\x00",
        b"\x02\x14account = 3735928559",
        b"\x00",
        b"\x01\x13http://auth.mybank/",
        b"\x02'this was how we remind auth of key/pred",
        b"\x04\x48" + b"\x00" * 24,
        bytes.fromhex(
            "d36ec502e05886d1f0279f055fa52554d16d16c1b14074bbb83ff0fdd79dc2fe"
            "098f0ed4a2b091130e6b5db46a20a86b"
        ),
        b"\x00",
        b"\x00",
        b"\x06\x20",
        bytes.fromhex("d27db2fd1f22760e4c3dae8137e2d8fc1df6c0741c18aed4b97256bf78d1f55c"),
    ]
)


def _urlsafe_raw(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _sample() -> Macaroon:
    m = mint(b"k" * 32, b"\x00\x01id\xff", "lsat")
    m = add_caveat(m, b"a=1")
    return add_caveat(m, b"b=2")


# --- interop vectors ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "caveats"),
    [
        (LIBMACAROONS_ONE_CAVEAT, (b"account = 3735928559",)),
        (LIBMACAROONS_TWO_CAVEATS, (b"account = 3735928559", b"user = alice")),
    ],
)
def test_libmacaroons_vectors_decode_verify_and_reencode(
    text: str, caveats: tuple[bytes, ...]
) -> None:
    m = from_base64(text)
    assert m.location == "http://example.org/"
    assert m.identifier == b"keyid"
    assert m.caveats == caveats
    assert verify_signature(m, LIBMACAROONS_KEY)
    assert not verify_signature(m, b"this is not the key")
    assert serialize_v2(m) == _urlsafe_raw(text)
    # Minting the same macaroon ourselves reproduces the libmacaroons signature.
    ours = mint(LIBMACAROONS_KEY, b"keyid", "http://example.org/")
    for caveat in caveats:
        ours = add_caveat(ours, caveat)
    assert ours == m


def test_aperture_macaroon_decodes_and_reencodes_byte_exact() -> None:
    m = from_base64(APERTURE_MACAROON)
    assert m.location == "lsat"
    assert len(m.identifier) == 66
    assert m.identifier[:2] == b"\x00\x00"
    assert m.identifier[2:34].hex() == APERTURE_PAYMENT_HASH
    assert m.caveats == (b"services=meme:0", b"meme_capabilities=")
    assert serialize_v2(m) == base64.b64decode(APERTURE_MACAROON)
    assert to_base64(m) == APERTURE_MACAROON


def test_go_third_party_vector_is_rejected() -> None:
    with pytest.raises(MacaroonError, match="third-party"):
        deserialize(GO_THIRD_PARTY_VECTOR)


# --- signatures -----------------------------------------------------------


def test_mint_and_add_caveat_follow_the_hmac_chain() -> None:
    import hashlib
    import hmac

    def h(key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, hashlib.sha256).digest()

    root = b"root key"
    m = mint(root, b"id")
    assert m.location == "lsat"
    assert m.caveats == ()
    assert m.signature == h(h(b"macaroons-key-generator", root), b"id")
    m2 = add_caveat(m, b"x=y")
    assert m2.signature == h(m.signature, b"x=y")
    assert m.caveats == ()  # the original is untouched
    assert verify_signature(m, root) and verify_signature(m2, root)


def test_tampering_breaks_the_signature() -> None:
    root = b"k" * 32
    m = _sample()
    assert verify_signature(m, root)
    changed = Macaroon(m.location, m.identifier, (b"a=9", b"b=2"), m.signature)
    removed = Macaroon(m.location, m.identifier, (b"a=1",), m.signature)
    appended = Macaroon(m.location, m.identifier, (*m.caveats, b"c=3"), m.signature)
    reordered = Macaroon(m.location, m.identifier, (b"b=2", b"a=1"), m.signature)
    other_id = Macaroon(m.location, b"other", m.caveats, m.signature)
    for bad in (changed, removed, appended, reordered, other_id):
        assert not verify_signature(bad, root)
    assert not verify_signature(m, b"j" * 32)
    # The location is only a hint and is not signed (as in go-macaroon).
    assert verify_signature(Macaroon("elsewhere", m.identifier, m.caveats, m.signature), root)


def test_add_caveat_properly_still_verifies() -> None:
    m = add_caveat(_sample(), b"c=3")
    assert m.caveats[-1] == b"c=3"
    assert verify_signature(m, b"k" * 32)


# --- encoding -------------------------------------------------------------


def test_round_trip_binary_and_base64() -> None:
    m = _sample()
    data = serialize_v2(m)
    assert data[0] == 2
    assert deserialize(data) == m
    assert from_base64(to_base64(m)) == m


def test_serialize_layout_matches_go_macaroon() -> None:
    m = Macaroon("loc", b"id", (b"c1",), b"\xaa" * 32)
    expected = b"".join(
        [
            b"\x02",  # version
            b"\x01\x03loc\x02\x02id\x00",  # header section
            b"\x02\x02c1\x00",  # one caveat section
            b"\x00",  # end of caveats
            b"\x06\x20" + b"\xaa" * 32,  # signature
        ]
    )
    assert serialize_v2(m) == expected


def test_empty_location_is_omitted() -> None:
    m = mint(b"k", b"id", "")
    data = serialize_v2(m)
    assert data[:2] == b"\x02\x02"
    assert deserialize(data) == m


def test_long_fields_use_multibyte_varints() -> None:
    m = add_caveat(mint(b"k", b"i" * 300), b"c" * 20000)
    data = serialize_v2(m)
    assert b"\x02\xac\x02" in data  # 300 as a uvarint
    assert deserialize(data) == m
    assert verify_signature(deserialize(data), b"k")


@pytest.mark.parametrize(
    "text",
    [
        "standard",
        "standard-unpadded",
        "urlsafe",
        "urlsafe-unpadded",
    ],
)
def test_from_base64_alphabets_and_padding(text: str) -> None:
    # Pick an identifier whose encoding needs padding and uses '+' or '/'.
    m = add_caveat(mint(b"k", b"\xfb\xff\xfe" * 3 + b"\xff"), b"x")
    raw = serialize_v2(m)
    assert len(raw) % 3
    assert set("+/") & set(base64.b64encode(raw).decode())
    encoded = {
        "standard": base64.b64encode(raw).decode(),
        "standard-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "urlsafe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }[text]
    assert from_base64(encoded) == m


@pytest.mark.parametrize("text", ["", "!!!!", "AgE$", "A", "AgE=A", "AgEE===", "Ag E"])
def test_from_base64_rejects_garbage(text: str) -> None:
    with pytest.raises(MacaroonError):
        from_base64(text)


# --- malformed input ------------------------------------------------------


def test_every_truncation_is_rejected() -> None:
    data = serialize_v2(_sample())
    for n in range(len(data)):
        with pytest.raises(MacaroonError):
            deserialize(data[:n])


def test_trailing_data_is_rejected() -> None:
    with pytest.raises(MacaroonError, match="after"):
        deserialize(serialize_v2(_sample()) + b"\x00")


def test_v1_and_json_are_rejected_clearly() -> None:
    v1 = base64.b64decode(
        "MDAxY2xvY2F0aW9uIGh0dHA6Ly9teWJhbmsvCjAwMjZpZGVudGlmaWVyIHdlIHVzZWQgb3VyIHNlY3JldCBrZXkK"
    )
    with pytest.raises(MacaroonError, match="only binary V2"):
        deserialize(v1)
    with pytest.raises(MacaroonError, match="JSON"):
        deserialize(b'{"v":2,"i":"id"}')
    with pytest.raises(MacaroonError, match="empty"):
        deserialize(b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # identifier before location (fields out of order)
        (b"\x02\x02\x02id\x01\x01l\x00\x00\x06\x20" + b"s" * 32, "out of order"),
        # missing identifier
        (b"\x02\x01\x01l\x00\x00\x06\x20" + b"s" * 32, "header"),
        # location in a first-party caveat
        (b"\x02\x02\x02id\x00\x01\x01l\x02\x01c\x00\x00\x06\x20" + b"s" * 32, "location"),
        # unknown field type in a caveat
        (b"\x02\x02\x02id\x00\x02\x01c\x05\x01x\x00\x00\x06\x20" + b"s" * 32, "caveat"),
        # short signature
        (b"\x02\x02\x02id\x00\x00\x06\x1f" + b"s" * 31, "32 bytes"),
        # something other than the signature at the end
        (b"\x02\x02\x02id\x00\x00\x02\x20" + b"s" * 32, "signature"),
        # non-minimal varint length (0x82 0x00 == 2)
        (b"\x02\x02\x82\x00id\x00\x00\x06\x20" + b"s" * 32, "minimal"),
        # varint above go-macaroon's 0x7fffffff limit
        (b"\x02\x02\xff\xff\xff\xff\x0f", "range"),
        # length pointing past the end
        (b"\x02\x02\x7fid", "past end"),
    ],
)
def test_malformed_structures(data: bytes, message: str) -> None:
    with pytest.raises(MacaroonError, match=message):
        deserialize(data)


def test_invalid_utf8_location_is_rejected() -> None:
    with pytest.raises(MacaroonError, match="UTF-8"):
        deserialize(b"\x02\x01\x01\xff\x02\x02id\x00\x00\x06\x20" + b"s" * 32)


def test_random_mutations_only_raise_macaroon_error() -> None:
    data = serialize_v2(_sample())
    rng = random.Random(1234)
    for _ in range(2000):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        try:
            deserialize(bytes(buf))
        except MacaroonError:
            pass


# --- limits ---------------------------------------------------------------


def test_caveat_count_limit() -> None:
    m = mint(b"k", b"id")
    for i in range(MAX_CAVEATS):
        m = add_caveat(m, b"c=%d" % i)
    assert deserialize(serialize_v2(m)) == m
    with pytest.raises(MacaroonError, match="caveats"):
        add_caveat(m, b"one too many")
    too_many = (
        b"\x02\x02\x02id\x00" + b"\x02\x01c\x00" * (MAX_CAVEATS + 1) + b"\x00\x06\x20" + b"s" * 32
    )
    with pytest.raises(MacaroonError, match="caveats"):
        deserialize(too_many)


def test_size_limit() -> None:
    big = add_caveat(mint(b"k", b"id"), b"x" * MAX_SIZE)
    with pytest.raises(MacaroonError, match="larger"):
        serialize_v2(big)
    with pytest.raises(MacaroonError, match="larger"):
        deserialize(b"\x02" + b"\x00" * MAX_SIZE)
    with pytest.raises(MacaroonError, match="larger"):
        from_base64("A" * (MAX_SIZE * 2))


def test_signature_length_is_enforced() -> None:
    with pytest.raises(MacaroonError):
        Macaroon("l", b"id", (), b"short")
