"""Paid signup: one account for proof of one Lightning payment (L402), per tenant.

A tenant that sets `signup_price_msat` answers `POST /v1/accounts` without credentials
with 402: an invoice for the price and a macaroon for the service `bitcache-signup`,
bound to the tenant and to an expiry. The same POST with
`Authorization: L402 <macaroon>:<preimage>` opens the account. The preimage proves the
payment (SHA-256 of it is the token's payment hash), the signature proves the token is
ours (root key derived from the gateway's token secret, as for chunk tokens), and the
invoice's row records the account it opened, so a payment opens one account only.

The macaroon cannot be used for downloads (its service is not `bitcache`) and a chunk
token cannot open an account (its service is not `bitcache-signup`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import l402
from gateway.billing import ledger
from gateway.clock import Clock, system_clock
from gateway.persistence import signups
from gateway.persistence.accounts import Account, insert_account
from gateway.persistence.database import Database
from gateway.persistence.ledger import book
from gateway.persistence.logins import NewLogin, attach
from l402.identifier import TOKEN_ID_LEN, TOKEN_ID_VERSION
from l402.macaroon import add_caveat, mint, to_base64, verify_signature
from l402.mint import root_key
from lightning.node import LightningNode

__all__ = [
    "SERVICE",
    "SignupChallenge",
    "SignupRefused",
    "Signups",
    "check_signup_caveats",
    "signup_caveats",
]

SERVICE = "bitcache-signup"
COND_TENANT = SERVICE + "_tenant"
COND_VALID_UNTIL = SERVICE + "_valid_until"


class SignupRefused(Exception):
    """A valid token that cannot open an account (already used, or unknown here)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug


@dataclass(frozen=True)
class SignupChallenge:
    macaroon_b64: str
    bolt11: str
    amount_msat: int
    valid_until: int


def signup_caveats(tenant_id: str, valid_until: int) -> list[l402.Caveat]:
    return [
        l402.Caveat(l402.COND_SERVICES, f"{SERVICE}:0"),
        l402.Caveat(COND_TENANT, tenant_id),
        l402.Caveat(COND_VALID_UNTIL, str(valid_until)),
    ]


def check_signup_caveats(caveats: Sequence[l402.Caveat], tenant_id: str, now: int) -> None:
    """Raises l402.TokenRejected unless every caveat holds (added caveats only narrow)."""
    seen = {l402.COND_SERVICES: False, COND_TENANT: False, COND_VALID_UNTIL: False}
    for caveat in caveats:
        if caveat.key == l402.COND_SERVICES:
            names = {item.partition(":")[0] for item in caveat.value.split(",")}
            if SERVICE not in names:
                raise l402.TokenRejected("token is not for opening an account")
        elif caveat.key == COND_TENANT:
            if not hmac.compare_digest(caveat.value.encode(), tenant_id.encode()):
                raise l402.TokenRejected("token is for another service")
        elif caveat.key == COND_VALID_UNTIL:
            if not caveat.value.isascii() or not caveat.value.isdigit():
                raise l402.TokenRejected("malformed expiry caveat")
            if int(caveat.value[:18]) <= now:
                raise l402.TokenRejected("token has expired")
        elif caveat.key.lower().startswith(SERVICE):
            raise l402.TokenRejected("unknown signup caveat")
        else:
            continue
        seen[caveat.key] = True
    if not all(seen.values()):
        raise l402.TokenRejected("token is not for opening an account")


class Signups:
    """Mints signup tokens against new invoices and opens accounts for paid ones."""

    def __init__(
        self, db: Database, secret: bytes, ttl_s: int, clock: Clock = system_clock
    ) -> None:
        self._db = db
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    async def challenge(
        self, tenant_id: str, label: str, price_msat: int, node: LightningNode, expiry_s: int
    ) -> SignupChallenge:
        """An invoice for the signup price (on the tenant's node) and a macaroon bound to it."""
        invoice = await node.create_invoice(price_msat, f"{label}: new account", expiry_s=expiry_s)
        now = int(self._clock())
        valid_until = now + self._ttl_s
        token = l402.TokenId(
            TOKEN_ID_VERSION, invoice.payment_hash, secrets.token_bytes(TOKEN_ID_LEN)
        )
        identifier = token.encode()
        macaroon = mint(root_key(self._secret, identifier), identifier)
        for caveat in signup_caveats(tenant_id, valid_until):
            macaroon = add_caveat(macaroon, caveat.encode())
        async with self._db.transaction() as conn:
            await signups.add_signup_invoice(
                conn, invoice.payment_hash, tenant_id, price_msat, invoice.bolt11, now
            )
        return SignupChallenge(to_base64(macaroon), invoice.bolt11, price_msat, valid_until)

    def verify(self, authorization: list[str], tenant_id: str) -> bytes:
        """The payment hash of a paid signup token for this tenant; raises l402.L402Error."""
        credential = l402.parse_authorization(authorization)
        if len(credential.macaroons) != 1:
            raise l402.TokenRejected("exactly one macaroon is required")
        macaroon = credential.macaroons[0]
        token = l402.TokenId.decode(macaroon.identifier)
        paid = hashlib.sha256(credential.preimage).digest()
        if not hmac.compare_digest(paid, token.payment_hash):
            raise l402.TokenRejected("preimage does not match the token's payment hash")
        if not verify_signature(macaroon, root_key(self._secret, macaroon.identifier)):
            raise l402.TokenRejected("invalid macaroon signature")
        caveats = [l402.parse_caveat(raw) for raw in macaroon.caveats]
        check_signup_caveats(caveats, tenant_id, int(self._clock()))
        return token.payment_hash

    async def redeem(
        self, payment_hash: bytes, tenant_id: str, new_login: NewLogin | None = None
    ) -> tuple[Account, str]:
        """Opens the account this payment bought, books the payment; once per payment.
        With `new_login`, the account gets that username (UsernameTaken: nothing opened)."""
        now = int(self._clock())
        async with self._db.transaction() as conn:
            account, api_key = await insert_account(conn, tenant_id, now)
            if new_login is not None:
                await attach(conn, tenant_id, account.id, new_login)
            amount = await signups.claim(conn, payment_hash, tenant_id, account.id, now)
            if amount is None:  # raising rolls the new account back
                if await signups.issued(conn, payment_hash, tenant_id):
                    raise SignupRefused(
                        409, "signup-token-used", "this payment has already opened an account"
                    )
                raise SignupRefused(403, "not-our-token", "no signup invoice for this token here")
            tx = ledger.signup_payment(payment_hash.hex(), amount)
            await book(conn, ledger.for_tenant(tx, tenant_id))
        return account, api_key
