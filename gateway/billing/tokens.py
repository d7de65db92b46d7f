"""Selling L402 tokens for chunk ranges, and checking the ones presented.

The token itself is the l402 package's (mint, verify: no database or node on the download
path, only SHA-256 and the HMAC chain). This service adds what needs the outside world:
the secret file, an invoice on the tenant's Lightning node, the invoice row, the clock,
and booking the sale as soon as a valid preimage proves payment. Credentials that verified
fully are cached (credential_cache.py), so a download's repeated token costs a lookup.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import l402
from gateway.billing.credential_cache import DEFAULT_CAPACITY, CredentialCache
from gateway.billing.pricing import ChunkRange, price_msat
from gateway.billing.settlement import Settlement
from gateway.clock import Clock, system_clock
from gateway.persistence import invoices
from gateway.persistence.database import Database
from gateway.persistence.files import FileRecord
from l402.macaroon import to_base64
from l402.mint import SECRET_LEN
from lightning.node import LightningNode

__all__ = ["Challenge", "TokenService", "load_or_create_secret"]


def load_or_create_secret(path: Path) -> bytes:
    """The gateway's token secret: 32 random bytes in a 0600 file, made on first start."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: another worker starting at the same
        # moment sees no file or the whole secret, never an empty one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(SECRET_LEN))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker won the race: use its secret
        finally:
            tmp.unlink()
        data = path.read_bytes()
    if len(data) != SECRET_LEN:
        raise ValueError(f"{path} must hold exactly 32 bytes")
    return data


@dataclass(frozen=True)
class Challenge:
    macaroon_b64: str
    bolt11: str
    amount_msat: int
    chunks: ChunkRange
    valid_until: int


class TokenService:
    """Mints tokens against new invoices and verifies presented ones, with one secret."""

    def __init__(
        self,
        secret: bytes,
        db: Database,
        settlement: Settlement,
        token_ttl_s: int,
        clock: Clock = system_clock,
        cache_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._secret = secret
        self._db = db
        self._settlement = settlement
        self._ttl = token_ttl_s
        self._clock = clock
        self._seen_settled: set[bytes] = set()
        self._verified = CredentialCache(cache_capacity)

    async def challenge(
        self,
        file: FileRecord,
        chunks: ChunkRange,
        node: LightningNode,
        invoice_expiry_s: int,
        node_id: str,
    ) -> Challenge:
        """Creates an invoice (on the file's tenant's node, whose identity is ``node_id``)
        for the range, and a macaroon bound to it."""
        amount = price_msat(file.price_msat, chunks)
        invoice = await node.create_invoice(
            amount,
            f"Bitcache: chunks {chunks.first}-{chunks.last} of {file.id}",
            expiry_s=invoice_expiry_s,
        )
        now = int(self._clock())
        valid_until = now + self._ttl
        macaroon = l402.mint_token(
            self._secret, invoice.payment_hash, file.id, chunks.first, chunks.last, valid_until
        )
        async with self._db.transaction() as conn:
            await invoices.add_chunk_invoice(
                conn,
                invoice.payment_hash,
                file.id,
                chunks.first,
                chunks.last,
                amount,
                invoice.bolt11,
                now,
                now + invoice_expiry_s,
                file.tenant_id,
                node_id,
            )
        return Challenge(to_base64(macaroon), invoice.bolt11, amount, chunks, valid_until)

    def verify(self, authorization: list[str], file_id: str, index: int) -> l402.TokenId:
        """Checks a credential for one chunk; raises l402.L402Error (or TokenRejected).

        A value seen before skips the crypto, never the checks of file, chunk and expiry."""
        now = int(self._clock())
        key = self._verified.key(authorization)
        grant = self._verified.get(key)
        if grant is None:
            grant = l402.verify_grant(authorization, self._secret, file_id, index, now)
            self._verified.put(key, grant)  # only reached when every check passed
            return grant.token
        try:
            grant.check(file_id, index, now)
        except l402.TokenRejected:
            if grant.valid_until <= now:
                self._verified.discard(key)  # expired for good: make room
            raise
        return grant.token

    def holder_payment_hash(self, macaroon_b64: str) -> bytes:
        """The payment hash of a macaroon this gateway minted (signature checked), for
        handing its holder the preimage once paid; raises l402.L402Error otherwise."""
        return l402.issued_payment_hash(self._secret, macaroon_b64)

    async def note_paid(self, payment_hash: bytes) -> None:
        """A valid preimage proves payment: book the sale now rather than wait for LND's
        stream (both paths are idempotent), once per token per process."""
        if payment_hash in self._seen_settled:
            return
        await self._settlement.book(payment_hash)
        if len(self._seen_settled) > 100_000:  # bound memory; a repeat is only a no-op
            self._seen_settled.clear()
        self._seen_settled.add(payment_hash)
