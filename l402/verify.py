"""Checking a presented token: payment, signature, then caveats (server side).

Only SHA-256 and the HMAC chain: no database and no Lightning node on the download path.
The caller passes the clock (``now``, unix seconds), so expiry is decided by what it says.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from l402.caveats import AccessRequest, Caveat, check_caveats, parse_caveat
from l402.errors import L402Error, MacaroonError, TokenRejected
from l402.headers import Credential, parse_authorization
from l402.identifier import TokenId
from l402.macaroon import Macaroon, from_base64, verify_signature
from l402.mint import root_key

__all__ = [
    "Grant",
    "identifier_of",
    "issued_payment_hash",
    "verify_authorization",
    "verify_credential",
    "verify_grant",
    "verify_paid",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a fully verified token grants: chunks ``first..last`` of ``file_id`` until
    ``valid_until``. Payment and signature were checked when it was made, so re-checking a
    request against it needs no crypto (a cache of verified credentials keeps these)."""

    token: TokenId
    file_id: str
    first: int
    last: int
    valid_until: int

    def check(self, file_id: str, chunk_index: int, now: int) -> None:
        """Raise TokenRejected, as :func:`check_caveats` would, unless this grants the
        request."""
        if file_id != self.file_id:
            raise TokenRejected("token is not valid for this file")
        if not self.first <= chunk_index <= self.last:
            raise TokenRejected("token is not valid for this chunk")
        if self.valid_until <= now:
            raise TokenRejected("token has expired")


def _single_macaroon(credential: Credential) -> Macaroon:
    if len(credential.macaroons) != 1:
        raise TokenRejected("exactly one macaroon is required")
    return credential.macaroons[0]


def identifier_of(credential: Credential) -> bytes:
    """The macaroon identifier, so the caller can look up or derive the root key."""
    return _single_macaroon(credential).identifier


def verify_credential(credential: Credential, key: bytes, request: AccessRequest) -> TokenId:
    """Check payment, signature (with root key ``key``) and caveats; return the identifier."""
    return _verify(credential, key, request)[0]


def _verify(
    credential: Credential, key: bytes, request: AccessRequest
) -> tuple[TokenId, tuple[int, int, int]]:
    token, caveats = verify_paid(credential, key)
    return token, check_caveats(caveats, request)


def verify_paid(credential: Credential, key: bytes) -> tuple[TokenId, list[Caveat]]:
    """Check payment and signature (root key ``key``) of a one-macaroon credential; return
    its identifier and its parsed caveats, for the caller's own caveat rules (chunk tokens
    here, credit tokens in l402/credit.py)."""
    mac = _single_macaroon(credential)
    try:
        token = TokenId.decode(mac.identifier)
    except L402Error as exc:
        raise TokenRejected(str(exc)) from None
    paid = hashlib.sha256(credential.preimage).digest()
    if not hmac.compare_digest(paid, token.payment_hash):
        raise TokenRejected("preimage does not match the token's payment hash")
    if not verify_signature(mac, key):
        raise TokenRejected("invalid macaroon signature")
    try:
        return token, [parse_caveat(raw) for raw in mac.caveats]
    except L402Error as exc:
        raise TokenRejected(str(exc)) from None


def verify_authorization(
    values: list[str], secret: bytes, file_id: str, chunk_index: int, now: int
) -> TokenId:
    """Authorization header values → the token's identifier, if it grants this chunk now.

    Raises L402Error (malformed) or TokenRejected (well-formed, but not for this).
    """
    return verify_grant(values, secret, file_id, chunk_index, now).token


def verify_grant(
    values: list[str], secret: bytes, file_id: str, chunk_index: int, now: int
) -> Grant:
    """As :func:`verify_authorization`, returning everything the token grants: the caveats
    passed :func:`check_caveats` for this file, so every file caveat names it, and the
    narrowest chunk range and expiry are the scope."""
    credential = parse_authorization(values)
    key = root_key(secret, identifier_of(credential))
    token, (first, last, valid_until) = _verify(
        credential, key, AccessRequest(file_id, chunk_index, now)
    )
    return Grant(token, file_id, first, last, valid_until)


def issued_payment_hash(secret: bytes, macaroon_b64: str) -> bytes:
    """The payment hash of a macaroon minted with ``secret`` (signature checked, caveats
    not): proof that its holder bought it here. Raises L402Error otherwise."""
    try:
        macaroon = from_base64(macaroon_b64)
    except MacaroonError as exc:
        raise L402Error(f"not a macaroon: {exc}") from exc
    if not verify_signature(macaroon, root_key(secret, macaroon.identifier)):
        raise TokenRejected("this macaroon was not issued here")
    return TokenId.decode(macaroon.identifier).payment_hash
