"""The cache of verified credentials: a hit skips the crypto, never the checks.

TokenService.verify with its cache, against tokens minted here (verify touches neither the
database nor settlement, so those are absent); a spy counts the full verifications.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, cast

import pytest

import l402
from gateway.billing.credential_cache import CredentialCache
from gateway.billing.tokens import TokenService
from l402.macaroon import to_base64

FILE_ID = "mrswmz3infvgw3dnnzxxa4lsom"
T0 = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def paid_token(secret: bytes, first: int = 0, last: int = 3, until: int = T0 + 60) -> str:
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    macaroon = l402.mint_token(secret, payment_hash, FILE_ID, first, last, until)
    return f"L402 {to_base64(macaroon)}:{preimage.hex()}"


@pytest.fixture
def secret() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(secret: bytes, clock: Clock) -> TokenService:
    return TokenService(secret, cast(Any, None), cast(Any, None), 3600, clock, cache_capacity=2)


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full verifications (l402.verify_grant) that TokenService makes."""
    calls: list[int] = []
    real: Callable[..., l402.Grant] = l402.verify_grant

    def spy(*args: Any) -> l402.Grant:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(l402, "verify_grant", spy)
    return calls


def test_a_repeated_token_is_verified_fully_once(
    service: TokenService, secret: bytes, full_checks: list[int]
) -> None:
    auth = [paid_token(secret)]
    tokens = {service.verify(auth, FILE_ID, index) for index in (0, 1, 2, 3, 0)}
    assert len(full_checks) == 1
    assert len(tokens) == 1  # the same identifier, from the cache


def test_a_cached_token_still_grants_only_its_file_and_range(
    service: TokenService, secret: bytes, full_checks: list[int]
) -> None:
    auth = [paid_token(secret, 2, 3)]
    service.verify(auth, FILE_ID, 2)
    with pytest.raises(l402.TokenRejected, match="not valid for this chunk"):
        service.verify(auth, FILE_ID, 4)
    with pytest.raises(l402.TokenRejected, match="not valid for this chunk"):
        service.verify(auth, FILE_ID, 1)
    with pytest.raises(l402.TokenRejected, match="not valid for this file"):
        service.verify(auth, "aaaaaaaaaaaaaaaaaaaaaaaaaa", 2)
    assert len(full_checks) == 1  # refused from the cache, with the uncached messages
    service.verify(auth, FILE_ID, 3)  # and still good for what it grants


def test_expiry_is_enforced_with_the_injected_clock(
    service: TokenService, secret: bytes, clock: Clock, full_checks: list[int]
) -> None:
    auth = [paid_token(secret, until=T0 + 60)]
    service.verify(auth, FILE_ID, 0)
    clock.now = T0 + 59.9  # int(now) = T0 + 59: still valid
    service.verify(auth, FILE_ID, 0)
    assert len(full_checks) == 1
    clock.now = T0 + 60
    with pytest.raises(l402.TokenRejected, match="expired"):
        service.verify(auth, FILE_ID, 0)
    # The expired entry is gone: the next try is a full check, refused again.
    with pytest.raises(l402.TokenRejected, match="expired"):
        service.verify(auth, FILE_ID, 0)
    assert len(full_checks) == 2


def test_a_failed_check_is_never_cached(
    service: TokenService, secret: bytes, full_checks: list[int]
) -> None:
    good = paid_token(secret)
    macaroon = good.split(" ")[1].split(":")[0]
    unpaid = [f"L402 {macaroon}:{'00' * 32}"]
    foreign = [paid_token(os.urandom(32))]  # signed with another gateway's secret
    for auth, reason in ((unpaid, "preimage"), (foreign, "signature")):
        for _ in range(2):
            with pytest.raises(l402.TokenRejected, match=reason):
                service.verify(auth, FILE_ID, 0)
    assert len(full_checks) == 4  # every attempt checked in full
    # A valid token first presented for a chunk it does not cover is not cached either,
    # so its later valid use is checked in full too.
    auth = [good]
    with pytest.raises(l402.TokenRejected, match="chunk"):
        service.verify(auth, FILE_ID, 9)
    service.verify(auth, FILE_ID, 0)
    service.verify(auth, FILE_ID, 1)
    assert len(full_checks) == 6


def test_malformed_values_are_refused_every_time(
    service: TokenService, full_checks: list[int]
) -> None:
    for _ in range(2):
        with pytest.raises(l402.L402Error):
            service.verify(["L402 not-a-macaroon:zz"], FILE_ID, 0)
    assert len(full_checks) == 2


def test_the_cache_is_a_bounded_lru(
    service: TokenService, secret: bytes, full_checks: list[int]
) -> None:
    a, b, c = ([paid_token(secret)] for _ in range(3))
    service.verify(a, FILE_ID, 0)
    service.verify(b, FILE_ID, 0)
    service.verify(a, FILE_ID, 0)  # a is now the most recently used
    service.verify(c, FILE_ID, 0)  # capacity 2: b goes
    assert len(full_checks) == 3
    service.verify(a, FILE_ID, 0)
    assert len(full_checks) == 3
    service.verify(b, FILE_ID, 0)
    assert len(full_checks) == 4


def test_keys_are_digests_of_the_exact_values() -> None:
    cache = CredentialCache(4)
    value = "L402 AgEE:" + "ab" * 32
    key = cache.key([value])
    assert len(key) == 32 and "ab" * 32 not in key.hex()  # holds no credential
    assert cache.key([value]) == key
    assert cache.key([value.replace("L402", "l402")]) != key
    assert cache.key(["a", "b"]) != cache.key(["ab"]) != cache.key(["b", "a"])
    assert CredentialCache(4).key([value]) != key  # a random key per cache
    with pytest.raises(ValueError):
        CredentialCache(0)
