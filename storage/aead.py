"""XChaCha20-Poly1305-IETF (libsodium) on buffers, without PyNaCl's copies of the data.

PyNaCl's public binding takes only ``bytes`` and, per call, zero-fills a scratch buffer of the
output's size and then copies it into a new ``bytes``. For a 1 MiB chunk those fresh
allocations cost more than the cipher: glibc hands large blocks back to the kernel and page
faults bring them back, so the binding ran at 300-500 MiB/s where libsodium itself does
~1300 MiB/s on this 2-core VM (profile in docs/format.md §15). Splitting ``nonce || body`` off a
received chunk, or joining it onto a sealed one, was one more such copy.

This module calls the same libsodium functions through PyNaCl's own cffi module
(``nacl._sodium``, what ``nacl.bindings`` wraps): it reads the input where it lies (any
contiguous buffer, e.g. the whole received chunk) and has libsodium write its output straight
into the ``bytes`` object it returns, allocated uninitialised with the C API's
``PyBytes_FromStringAndSize(NULL, n)`` and filled before any other code can see it — the way C
extensions build bytes. cffi releases the GIL during the libsodium call, as PyNaCl does.

If a PyNaCl release moves its internals, :data:`DIRECT` is false and the public binding is used
(same bytes, slower); tests/unit/test_aead.py fails then, so CI notices.
"""

from __future__ import annotations

import ctypes

import nacl.exceptions
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16

try:
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _lib.crypto_aead_xchacha20poly1305_ietf_encrypt  # noqa: B018 (fail here if renamed)
    _lib.crypto_aead_xchacha20poly1305_ietf_decrypt  # noqa: B018
    # A prototype of our own, so no other user of ctypes.pythonapi can change its restype.
    # py_object: ctypes takes over the new reference the function returns (no leak).
    _new_bytes = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_ssize_t)(
        ("PyBytes_FromStringAndSize", ctypes.pythonapi)
    )
    DIRECT = True
except (ImportError, AttributeError):  # pragma: no cover - depends on the PyNaCl release
    DIRECT = False


def _check(ad: bytes, nonce: bytes | None, key: bytes) -> None:
    # libsodium reads fixed lengths from these pointers: a short key or nonce would be read
    # out of bounds, so they are checked here (PyNaCl's wrapper did it before).
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise TypeError(f"key must be {KEY_BYTES} bytes")
    if nonce is not None and (not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES):
        raise TypeError(f"nonce must be {NONCE_BYTES} bytes")
    if not isinstance(ad, bytes):
        raise TypeError("associated data must be bytes")


def seal(plaintext: bytes | bytearray | memoryview, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """``nonce || XChaCha20-Poly1305-IETF(key, nonce, ad, plaintext)`` as one new bytes."""
    _check(ad, nonce, key)
    # Every view is released by its `with` before anything can raise out of here: a raised
    # error's traceback keeps this frame alive, and a buffer still exported from a frame
    # the GC tears down crashed CPython (and would pin the caller's bytearray meanwhile).
    with memoryview(plaintext) as whole, whole.cast("B") as view:
        if not DIRECT:  # pragma: no cover
            return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
                view.tobytes(), ad, nonce, key
            )
        size = view.nbytes
        out = _new_bytes(None, NONCE_BYTES + size + TAG_BYTES)
        with (
            _ffi.from_buffer("unsigned char[]", view) as src,
            _ffi.from_buffer("unsigned char[]", out) as dst,
        ):
            _ffi.memmove(dst, nonce, NONCE_BYTES)
            rc = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
                dst + NONCE_BYTES, _ffi.NULL, src, size, ad, len(ad), _ffi.NULL, nonce, key
            )
    if rc != 0:  # pragma: no cover - libsodium fails only past 256 GiB
        raise nacl.exceptions.CryptoError("encryption failed")
    return out  # type: ignore[no-any-return]


def open(sealed: bytes | bytearray | memoryview, ad: bytes, key: bytes) -> bytes:
    """Inverse of :func:`seal`; nacl.exceptions.CryptoError unless the tag verifies."""
    _check(ad, None, key)
    with memoryview(sealed) as whole, whole.cast("B") as view:  # released before any raise
        size = view.nbytes - NONCE_BYTES - TAG_BYTES
        out: bytes | None
        if size < 0:
            out = None
        elif not DIRECT or size < 2:
            # Below 2 bytes CPython may share bytes objects: never write into one of those.
            nonce, body = view[:NONCE_BYTES].tobytes(), view[NONCE_BYTES:].tobytes()
            try:
                out = crypto_aead_xchacha20poly1305_ietf_decrypt(body, ad, nonce, key)
            except nacl.exceptions.CryptoError:
                out = None
        else:
            out = _new_bytes(None, size)
            with (
                _ffi.from_buffer("unsigned char[]", view) as src,
                _ffi.from_buffer("unsigned char[]", out) as dst,
            ):
                rc = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    dst,
                    _ffi.NULL,
                    _ffi.NULL,
                    src + NONCE_BYTES,
                    size + TAG_BYTES,
                    ad,
                    len(ad),
                    src,
                    key,
                )
            if rc != 0:
                out = None  # libsodium has zeroed it; dropped, never returned
    if out is None:
        raise nacl.exceptions.CryptoError("the tag does not verify (or too short)")
    return out
