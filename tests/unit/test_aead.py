"""storage.aead must give exactly PyNaCl's bytes, without its copies, and fail like it."""

from __future__ import annotations

import os
import sys
import threading

import nacl.exceptions
import pytest
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from storage import aead

KEY = bytes(range(32))
NONCE = bytes(range(40, 64))
AD = b"associated data"


def test_direct_path_is_in_use() -> None:
    # If this fails, a PyNaCl upgrade moved nacl._sodium: everything still works through the
    # public binding, but at the old speed (see the module docstring).
    assert aead.DIRECT


@pytest.mark.parametrize("size", [0, 1, 2, 3, 15, 16, 17, 63, 64, 65, 4096, (1 << 20) + 3])
def test_same_bytes_as_pynacl(size: int) -> None:
    plaintext = os.urandom(size)
    body = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, AD, NONCE, KEY)
    sealed = aead.seal(plaintext, AD, NONCE, KEY)
    assert type(sealed) is bytes
    assert sealed == NONCE + body
    opened = aead.open(sealed, AD, KEY)
    assert type(opened) is bytes
    assert opened == plaintext
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], AD, NONCE, KEY) == plaintext


def test_empty_associated_data() -> None:
    sealed = aead.seal(b"abc", b"", NONCE, KEY)
    assert sealed[24:] == crypto_aead_xchacha20poly1305_ietf_encrypt(b"abc", b"", NONCE, KEY)
    assert aead.open(sealed, b"", KEY) == b"abc"


def test_results_are_fresh_objects_without_leaks() -> None:
    plaintext = os.urandom(1000)
    sealed = aead.seal(plaintext, AD, NONCE, KEY)
    again = aead.seal(plaintext, AD, NONCE, KEY)
    assert sealed == again and sealed is not again
    a, b = aead.open(sealed, AD, KEY), aead.open(sealed, AD, KEY)
    assert a == b == plaintext and a is not b
    # One reference for the name, one for getrefcount's argument: ctypes kept none.
    assert sys.getrefcount(sealed) == 2
    assert sys.getrefcount(a) == 2
    # CPython shares its 0- and 1-byte bytes objects: opening such chunks must not write
    # into them (they would change for the whole interpreter).
    for value in (0, 1, 0x41, 0xFF):
        assert aead.open(aead.seal(bytes([value ^ 0x5A]), AD, NONCE, KEY), AD, KEY) == bytes(
            [value ^ 0x5A]
        )
    assert aead.open(aead.seal(b"", AD, NONCE, KEY), AD, KEY) == b""
    assert all(bytes([i])[0] == i for i in range(256))
    assert len(b"") == 0


def test_buffers_and_views() -> None:
    plaintext = os.urandom(300)
    sealed = aead.seal(plaintext, AD, NONCE, KEY)
    assert aead.seal(bytearray(plaintext), AD, NONCE, KEY) == sealed
    assert aead.seal(memoryview(plaintext), AD, NONCE, KEY) == sealed
    framed = b"xx" + sealed + b"yy"
    assert aead.open(memoryview(framed)[2:-2], AD, KEY) == plaintext
    assert aead.open(bytearray(sealed), AD, KEY) == plaintext
    with pytest.raises(TypeError):
        aead.open(memoryview(framed)[::2], AD, KEY)  # not contiguous


@pytest.mark.parametrize("size", [0, 1, 2, 100])
def test_tampering_fails(size: int) -> None:
    sealed = aead.seal(os.urandom(size), AD, NONCE, KEY)
    for pos in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[pos] ^= 0x80
        with pytest.raises(nacl.exceptions.CryptoError):
            aead.open(tampered, AD, KEY)
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.open(sealed, AD + b"!", KEY)
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.open(sealed, AD, bytes(32))
    with pytest.raises(nacl.exceptions.CryptoError):
        aead.open(sealed[:39], AD, KEY)


def test_bad_key_nonce_and_ad_are_refused_before_libsodium_reads_them() -> None:
    with pytest.raises(TypeError, match="key"):
        aead.seal(b"x", AD, NONCE, KEY[:31])
    with pytest.raises(TypeError, match="key"):
        aead.open(bytes(40), AD, bytearray(KEY))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nonce"):
        aead.seal(b"x", AD, NONCE[:23], KEY)
    with pytest.raises(TypeError, match="associated data"):
        aead.seal(b"x", "ad", NONCE, KEY)  # type: ignore[arg-type]


def test_threads_open_concurrently() -> None:
    """The GIL is released in libsodium; results stay correct under concurrency."""
    chunks = [os.urandom(100_000 + i) for i in range(8)]
    sealed = [aead.seal(c, AD, NONCE, KEY) for c in chunks]
    results: list[bool] = []

    def work() -> None:
        for _ in range(5):
            results.append(
                all(aead.open(s, AD, KEY) == c for s, c in zip(sealed, chunks, strict=True))
            )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 20


@pytest.mark.parametrize("size", [0, 100])
def test_failures_leave_no_buffer_exported(size: int) -> None:
    """A raised error keeps the function's frame alive in its traceback: no buffer of the
    caller's may still be exported from there (that crashed the GC when the frame died)."""
    sealed = bytearray(aead.seal(os.urandom(size), AD, NONCE, KEY))
    sealed[-1] ^= 1
    with pytest.raises(nacl.exceptions.CryptoError) as failed:
        aead.open(sealed, AD, KEY)
    assert failed.value.__traceback__ is not None
    sealed.append(0)  # BufferError if a view of it were still exported
    plaintext = bytearray(10)
    with pytest.raises(TypeError) as refused:
        aead.seal(plaintext, AD, NONCE, KEY[:5])
    assert refused.value.__traceback__ is not None
    plaintext.append(0)
