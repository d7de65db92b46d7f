"""L402 (formerly LSAT), both sides: Aperture-compatible macaroons, caveats, headers, tokens.

Pure: no aiohttp, no database, no clock of its own. The gateway mints and verifies with it;
the client reads challenges and presents paid tokens with it. One concept per module:

- ``macaroon``: the macaroon V2 binary codec (go-macaroon compatible), HMAC chain
- ``identifier``: the token identifier (version ‖ payment hash ‖ token id)
- ``caveats``: the conditions a token carries, the server's check, the client's reading
- ``headers``: ``WWW-Authenticate`` challenge and ``Authorization`` credentials
- ``mint`` / ``verify``: the server's two jobs, with the root key derived from a secret
- ``token``: the client's paid token
- ``credit``: prepaid credit tokens (minted, verified; the balance is the server's)
- ``errors``: what can go wrong

The names most callers need are re-exported here (``import l402; l402.parse_authorization``).
"""

from l402.caveats import (
    COND_CHUNKS,
    COND_FILE,
    COND_SERVICES,
    COND_VALID_UNTIL,
    SERVICE,
    AccessRequest,
    Caveat,
    TokenScope,
    build_caveats,
    check_caveats,
    parse_caveat,
    token_scope,
)
from l402.credit import (
    COND_CREDIT,
    check_credit_caveats,
    is_credit_authorization,
    is_credit_macaroon,
    mint_credit,
    verify_credit,
)
from l402.errors import ChallengeError, L402Error, MacaroonError, TokenRejected
from l402.headers import (
    Challenge,
    Credential,
    format_challenge,
    parse_authorization,
    parse_challenge,
)
from l402.identifier import TokenId
from l402.macaroon import Macaroon
from l402.mint import mint_token, root_key
from l402.token import Token
from l402.verify import (
    Grant,
    identifier_of,
    issued_payment_hash,
    verify_authorization,
    verify_credential,
    verify_grant,
)

__all__ = [
    "COND_CHUNKS",
    "COND_CREDIT",
    "COND_FILE",
    "COND_SERVICES",
    "COND_VALID_UNTIL",
    "SERVICE",
    "AccessRequest",
    "Caveat",
    "Challenge",
    "ChallengeError",
    "Credential",
    "Grant",
    "L402Error",
    "Macaroon",
    "MacaroonError",
    "Token",
    "TokenId",
    "TokenRejected",
    "TokenScope",
    "build_caveats",
    "check_caveats",
    "check_credit_caveats",
    "format_challenge",
    "identifier_of",
    "is_credit_authorization",
    "is_credit_macaroon",
    "issued_payment_hash",
    "mint_credit",
    "mint_token",
    "parse_authorization",
    "parse_caveat",
    "parse_challenge",
    "root_key",
    "token_scope",
    "verify_authorization",
    "verify_credential",
    "verify_credit",
    "verify_grant",
]
