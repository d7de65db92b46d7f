"""Selling and checking L402 tokens for chunk ranges.

Root keys are not stored: each is HMAC(secret, identifier), so checking a token needs no
database or LND call on the download path, only SHA-256 and the HMAC chain.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import l402
from gateway.billing.pricing import ChunkRange, price_msat
from gateway.billing.settlement import Settlement
from gateway.persistence.database import Database
from gateway.persistence.files import FileRecord
from l402.macaroon import (
    MacaroonError,
    add_caveat,
    from_base64,
    mint,
    to_base64,
    verify_signature,
)
from lightning.lnd import LndRestClient

_ROOT_KEY_DOMAIN = b"bitcache/v1/l402-root-key"


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
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker won the race: use its secret
        finally:
            tmp.unlink()
        data = path.read_bytes()
    if len(data) != 32:
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
    def __init__(
        self, secret: bytes, db: Database, settlement: Settlement, token_ttl_s: int
    ) -> None:
        self._secret = secret
        self._db = db
        self._settlement = settlement
        self._ttl = token_ttl_s
        self._seen_settled: set[bytes] = set()

    def root_key(self, identifier: bytes) -> bytes:
        return hmac.new(self._secret, _ROOT_KEY_DOMAIN + identifier, hashlib.sha256).digest()

    async def challenge(
        self, file: FileRecord, chunks: ChunkRange, lnd: LndRestClient, invoice_expiry_s: int
    ) -> Challenge:
        """Creates an invoice (on the file's tenant's node) for the range, and a macaroon
        bound to it."""
        amount = price_msat(file.price_msat, chunks)
        invoice = await lnd.create_invoice(
            amount,
            f"Bitcache: chunks {chunks.first}-{chunks.last} of {file.id}",
            expiry_s=invoice_expiry_s,
        )
        now = int(time.time())
        valid_until = now + self._ttl
        token_id = l402.TokenId(0, invoice.payment_hash, secrets.token_bytes(32))
        identifier = token_id.encode()
        macaroon = mint(self.root_key(identifier), identifier)
        for caveat in l402.build_caveats(file.id, chunks.first, chunks.last, valid_until):
            macaroon = add_caveat(macaroon, caveat.encode())
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO invoices (payment_hash, file_id, first_chunk, last_chunk,"
                " amount_msat, bolt11, created_at, expires_at, tenant_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    invoice.payment_hash,
                    file.id,
                    chunks.first,
                    chunks.last,
                    amount,
                    invoice.bolt11,
                    now,
                    now + invoice_expiry_s,
                    file.tenant_id,
                ),
            )
        return Challenge(to_base64(macaroon), invoice.bolt11, amount, chunks, valid_until)

    def verify(self, authorization: list[str], file_id: str, index: int) -> l402.TokenId:
        """Checks a credential for one chunk; raises l402.L402Error (or TokenRejected)."""
        credential = l402.parse_authorization(authorization)
        root_key = self.root_key(l402.identifier_of(credential))
        request = l402.AccessRequest(file_id=file_id, chunk_index=index, now=int(time.time()))
        return l402.verify_credential(credential, root_key, request)

    def holder_payment_hash(self, macaroon_b64: str) -> bytes:
        """The payment hash of a macaroon this gateway minted (signature checked), for
        handing its holder the preimage once paid; raises l402.L402Error otherwise."""
        try:
            macaroon = from_base64(macaroon_b64)
        except MacaroonError as exc:
            raise l402.L402Error(f"not a macaroon: {exc}") from exc
        if not verify_signature(macaroon, self.root_key(macaroon.identifier)):
            raise l402.TokenRejected("this macaroon was not issued here")
        return l402.TokenId.decode(macaroon.identifier).payment_hash

    async def note_paid(self, payment_hash: bytes) -> None:
        """A valid preimage proves payment: book the sale now rather than wait for LND's
        stream (both paths are idempotent), once per token per process."""
        if payment_hash in self._seen_settled:
            return
        await self._settlement.book(payment_hash)
        if len(self._seen_settled) > 100_000:  # bound memory; a repeat is only a no-op
            self._seen_settled.clear()
        self._seen_settled.add(payment_hash)
