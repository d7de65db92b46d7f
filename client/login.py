"""Logging in with a username and password, and opening an account that can.

The password never leaves this process except once: at the first login of an account
restored from the old service, when the gateway must check it against the old hash. Always
the client derives `proof = argon2id(password, salt)` (docs/api.md "Login") over the bare
password; the vault key (docs/format.md §14.3) is derived from a keyed prehash of the same
password, so the proof the gateway sees opens no vault. Nothing here logs or prints the
password or the proof.
"""

from __future__ import annotations

from typing import Any

import nacl.pwhash.argon2id as argon2id
import nacl.utils

from client.api import BitcacheClient
from client.errors import ClientError, GatewayError
from storage.vault import MAX_MEMLIMIT, MAX_OPSLIMIT, MIN_MEMLIMIT, MIN_OPSLIMIT

SALT_BYTES = 16
PROOF_BYTES = 32


def derive_proof(password: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    """argon2id(password, salt) at the cost the gateway named, refusing a cost outside the
    vault's bounds (a gateway must not make a device do trivially cheap work, nor hang it)."""
    opslimit, memlimit = kdf.get("opslimit"), kdf.get("memlimit")
    if kdf.get("name") != "argon2id" or type(opslimit) is not int or type(memlimit) is not int:
        raise ClientError("the gateway named a login key derivation this client does not know")
    if not (MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT and MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT):
        raise ClientError("the gateway asked for a login key derivation cost out of bounds")
    if len(salt) != SALT_BYTES:
        raise ClientError("the gateway's login salt is not 16 bytes")
    return bytes(argon2id.kdf(PROOF_BYTES, password.encode("utf-8"), salt, opslimit, memlimit))


async def _salt(client: BitcacheClient, username: str) -> tuple[bytes, dict[str, Any]]:
    answer = await client.call("POST", "/v1/login/salt", json_body={"username": username})
    try:
        return bytes.fromhex(str(answer["salt"])), dict(answer["kdf"])
    except (KeyError, ValueError, TypeError):
        raise ClientError("the gateway's login salt answer is malformed") from None


async def login(client: BitcacheClient, username: str, password: str) -> dict[str, Any]:
    """A new API key for the account (not yet saved). Tries the proof alone; if refused,
    once more with the password too (a restored account's first login replaces its old
    hash by this proof; for any other account the gateway refuses it the same way)."""
    salt, kdf = await _salt(client, username)
    proof = derive_proof(password, salt, kdf).hex()
    try:
        return await client.call(
            "POST", "/v1/login", json_body={"username": username, "proof": proof}, ok=(200,)
        )
    except GatewayError as exc:
        if exc.status != 401:
            raise
    try:
        return await client.call(
            "POST",
            "/v1/login",
            json_body={"username": username, "proof": proof, "password": password},
            ok=(200,),
        )
    except GatewayError as exc:
        if exc.status == 401:
            raise ClientError("login failed: wrong username or password") from None
        raise


async def create(client: BitcacheClient, username: str, password: str) -> dict[str, Any]:
    """A new account with a username: this client makes the login salt and sends only the
    proof derived under it, at the cost the gateway hands out for logins."""
    _, kdf = await _salt(client, username)
    salt = nacl.utils.random(SALT_BYTES)
    proof = derive_proof(password, salt, kdf).hex()
    return await client.call(
        "POST",
        "/v1/accounts",
        json_body={"username": username, "proof": proof, "login_salt": salt.hex()},
        ok=(201,),
    )
