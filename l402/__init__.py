"""L402 (formerly LSAT), both sides: Aperture-compatible macaroons, caveats, headers, tokens.

Pure: no aiohttp, no database, no clock of its own. The gateway mints and verifies with it;
the client reads challenges and presents paid tokens with it. The names most callers need
are re-exported here, so ``import l402`` then ``l402.parse_authorization(...)`` works.
"""

from l402.caveats import (
    COND_CHUNKS,
    COND_FILE,
    COND_SERVICES,
    COND_VALID_UNTIL,
    SERVICE,
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
from l402.macaroon import Macaroon, MacaroonError

__all__ = [
    "COND_CHUNKS",
    "COND_FILE",
    "COND_SERVICES",
    "COND_VALID_UNTIL",
    "SERVICE",
    "AccessRequest",
    "Caveat",
    "Credential",
    "L402Error",
    "Macaroon",
    "MacaroonError",
    "TokenId",
    "TokenRejected",
    "build_caveats",
    "check_caveats",
    "format_challenge",
    "identifier_of",
    "parse_authorization",
    "parse_caveat",
    "verify_credential",
]
