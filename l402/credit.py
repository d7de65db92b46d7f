"""Credit tokens: prepaid balance bought over Lightning, spent chunk range by chunk range.

A credit token is an L402 token like a chunk token (same identifier, same root key,
same ``Authorization: L402 <macaroon>:<preimage>``), with other caveats:
``services=bitcache:0``, ``bitcache_credit=<tenant>`` and ``bitcache_valid_until=<unix>``.
It names no file and no chunks, so :func:`l402.check_caveats` refuses it for a chunk
(``bitcache_credit`` is an unknown ``bitcache_*`` condition there), and a chunk token
lacks ``bitcache_credit``, so :func:`check_credit_caveats` refuses it as credit. What the
credit still holds is the server's database's business; this module only says whether a
presented credential is a paid credit token of this gateway for this tenant, now.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence

from l402.caveats import (
    COND_SERVICES,
    COND_VALID_UNTIL,
    SERVICE,
    Caveat,
    parse_caveat,
    timestamp,
)
from l402.errors import L402Error, MacaroonError, TokenRejected
from l402.headers import parse_authorization
from l402.identifier import TOKEN_ID_LEN, TOKEN_ID_VERSION, TokenId
from l402.macaroon import Macaroon, add_caveat, from_base64, mint
from l402.mint import root_key
from l402.verify import identifier_of, verify_paid

__all__ = [
    "COND_CREDIT",
    "check_credit_caveats",
    "credit_caveats",
    "is_credit_authorization",
    "is_credit_macaroon",
    "mint_credit",
    "verify_credit",
]

COND_CREDIT = "bitcache_credit"


def credit_caveats(tenant_id: str, valid_until: int) -> list[Caveat]:
    """Caveats of a credit token spendable on ``tenant_id``'s files until ``valid_until``."""
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    if valid_until < 0:
        raise ValueError("valid_until must not be negative")
    return [
        Caveat(COND_SERVICES, f"{SERVICE}:0"),
        Caveat(COND_CREDIT, tenant_id),
        Caveat(COND_VALID_UNTIL, str(valid_until)),
    ]


def check_credit_caveats(caveats: Sequence[Caveat], tenant_id: str, now: int) -> int:
    """Raise :class:`TokenRejected` unless the caveats make a credit token for ``tenant_id``
    valid at ``now``; return its expiry (the narrowest ``bitcache_valid_until``).

    Repeated conditions may only narrow (as for chunk tokens); any other ``bitcache_*``
    condition (a file, a chunk range) fails closed: credit is not a chunk token."""
    services: list[set[str]] = []
    tenants: list[str] = []
    deadlines: list[int] = []
    for caveat in caveats:
        key = caveat.key
        if key == COND_SERVICES:
            names = {item.partition(":")[0] for item in caveat.value.split(",")}
            if services and not names <= services[-1]:
                raise TokenRejected("services caveat widens an earlier one")
            services.append(names)
        elif key == COND_CREDIT:
            if tenants and caveat.value != tenants[-1]:
                raise TokenRejected("bitcache_credit caveat changes the tenant")
            tenants.append(caveat.value)
        elif key == COND_VALID_UNTIL:
            deadline = timestamp(caveat.value)
            if deadlines and deadline > deadlines[-1]:
                raise TokenRejected("bitcache_valid_until caveat extends an earlier one")
            deadlines.append(deadline)
        elif key.lower().startswith(SERVICE + "_"):
            raise TokenRejected("not a credit token")
    if not services or SERVICE not in services[-1]:
        raise TokenRejected("token is not valid for the bitcache service")
    if not tenants or not deadlines:
        raise TokenRejected("not a credit token")
    if not hmac.compare_digest(tenants[-1].encode(), tenant_id.encode()):
        raise TokenRejected("credit token is for another service")
    if deadlines[-1] <= now:
        raise TokenRejected("credit has expired")
    return deadlines[-1]


def mint_credit(
    secret: bytes,
    payment_hash: bytes,
    tenant_id: str,
    valid_until: int,
    token_id: bytes | None = None,
) -> Macaroon:
    """A credit macaroon, usable once the invoice with ``payment_hash`` is paid."""
    token = TokenId(TOKEN_ID_VERSION, payment_hash, token_id or secrets.token_bytes(TOKEN_ID_LEN))
    identifier = token.encode()
    macaroon = mint(root_key(secret, identifier), identifier)
    for caveat in credit_caveats(tenant_id, valid_until):
        macaroon = add_caveat(macaroon, caveat.encode())
    return macaroon


def verify_credit(
    values: list[str], secret: bytes, tenant_id: str, now: int
) -> tuple[TokenId, int]:
    """Authorization values → (the credit's token id, its expiry), if they present a paid
    credit token minted with ``secret`` for ``tenant_id``, valid now.

    Raises L402Error (malformed) or TokenRejected (well-formed, but not a credit here)."""
    credential = parse_authorization(values)
    key = root_key(secret, identifier_of(credential))
    token, caveats = verify_paid(credential, key)
    return token, check_credit_caveats(caveats, tenant_id, now)


def is_credit_macaroon(macaroon_b64: str) -> bool:
    """Whether a macaroon says it is credit (signature not checked: for routing a request
    to the credit check, and for clients sorting what they hold)."""
    try:
        macaroon = from_base64(macaroon_b64)
        return any(parse_caveat(raw).key == COND_CREDIT for raw in macaroon.caveats)
    except (MacaroonError, L402Error, ValueError):
        return False


def is_credit_authorization(values: list[str]) -> bool:
    """Whether Authorization values present a macaroon that says it is credit (signature
    not checked: this only routes the request to :func:`verify_credit`)."""
    try:
        credential = parse_authorization(values)
        return any(
            parse_caveat(raw).key == COND_CREDIT
            for macaroon in credential.macaroons
            for raw in macaroon.caveats
        )
    except (L402Error, ValueError):
        return False
