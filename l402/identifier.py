"""The token identifier inside every L402 macaroon, as Aperture lays it out.

``version (2 bytes, big-endian) ‖ payment hash (32) ‖ token id (32)``: the payment hash ties
the token to its invoice, the random token id makes each token unique.
"""

from __future__ import annotations

from dataclasses import dataclass

from l402.errors import L402Error

__all__ = ["HASH_LEN", "TOKEN_ID_LEN", "TOKEN_ID_VERSION", "TokenId"]

TOKEN_ID_VERSION = 0
HASH_LEN = 32
TOKEN_ID_LEN = 32
_ENCODED_ID_LEN = 2 + HASH_LEN + TOKEN_ID_LEN


@dataclass(frozen=True)
class TokenId:
    """Aperture's macaroon identifier: version, payment hash, random token id."""

    version: int
    payment_hash: bytes
    token_id: bytes

    def encode(self) -> bytes:
        if self.version != TOKEN_ID_VERSION:
            raise L402Error(f"unknown token identifier version {self.version}")
        if len(self.payment_hash) != HASH_LEN or len(self.token_id) != TOKEN_ID_LEN:
            raise L402Error("payment hash and token id must be 32 bytes each")
        return self.version.to_bytes(2, "big") + self.payment_hash + self.token_id

    @classmethod
    def decode(cls, b: bytes) -> TokenId:
        if len(b) < 2:
            raise L402Error("token identifier too short")
        version = int.from_bytes(b[:2], "big")
        if version != TOKEN_ID_VERSION:
            raise L402Error(f"unknown token identifier version {version}")
        if len(b) != _ENCODED_ID_LEN:
            raise L402Error("token identifier has wrong length")
        return cls(version, bytes(b[2 : 2 + HASH_LEN]), bytes(b[2 + HASH_LEN :]))
