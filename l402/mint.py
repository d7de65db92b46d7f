"""Minting a token: a macaroon bound to an invoice's payment hash, narrowed by caveats.

Root keys are never stored: each is HMAC-SHA256(secret, domain ‖ identifier), so whoever
holds the secret can check any token it minted with no database and no node (Aperture
stores one random root key per token instead; the wire format is the same). No clock here:
the caller decides ``valid_until``.
"""

from __future__ import annotations

import hmac
import secrets

from l402.caveats import build_caveats
from l402.identifier import TOKEN_ID_LEN, TOKEN_ID_VERSION, TokenId
from l402.macaroon import Macaroon, add_caveat, mint

__all__ = ["ROOT_KEY_DOMAIN", "SECRET_LEN", "mint_token", "root_key"]

ROOT_KEY_DOMAIN = b"bitcache/v1/l402-root-key"
SECRET_LEN = 32


def root_key(secret: bytes, identifier: bytes) -> bytes:
    """The root key of the macaroon with this identifier."""
    return hmac.digest(secret, ROOT_KEY_DOMAIN + identifier, "sha256")


def mint_token(
    secret: bytes,
    payment_hash: bytes,
    file_id: str,
    first: int,
    last: int,
    valid_until: int,
    token_id: bytes | None = None,
) -> Macaroon:
    """A macaroon for chunks ``first..last`` of ``file_id``, usable once the invoice with
    ``payment_hash`` is paid and until ``valid_until`` (unix seconds).

    ``token_id`` defaults to 32 random bytes; tests pass their own.
    """
    token = TokenId(TOKEN_ID_VERSION, payment_hash, token_id or secrets.token_bytes(TOKEN_ID_LEN))
    identifier = token.encode()
    macaroon = mint(root_key(secret, identifier), identifier)
    for caveat in build_caveats(file_id, first, last, valid_until):
        macaroon = add_caveat(macaroon, caveat.encode())
    return macaroon
