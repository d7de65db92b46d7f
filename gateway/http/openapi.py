"""The OpenAPI 3.1 description of the HTTP API, built from one table and the pydantic models.

`OPERATIONS` lists every /v1 route with its parameters, request body and the statuses it may
answer; `document()` turns it into the JSON served at /v1/openapi.json and committed as
docs/openapi.json. Tests hold the table to the app's router (no route undocumented) and
schemathesis holds the live gateway to the document.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.http import models as m

API_VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"

_STATUS_TEXT = {
    400: "Malformed request (bad JSON, id, index or header)",
    401: "No or unknown API key",
    402: "Payment required: an L402 challenge (WWW-Authenticate) and its price",
    403: "Not allowed for this caller",
    404: "Unknown here (or another tenant's)",
    405: "Method not allowed",
    409: "Conflicts with what is stored",
    410: "Deleted by its owner",
    408: "The request body did not arrive whole in time (the connection is closed)",
    413: "Body too large",
    415: "Unsupported media type",
    421: "The Host names no tenant of this deployment",
    422: "Well-formed but invalid",
    429: "Too many requests from this client, or new accounts for this service (Retry-After)",
    502: "A dependency answered wrongly",
    503: "A dependency is down, or too many request bodies are being received (Retry-After)",
    507: "Over quota, or the service's free tier as a whole is full",
}
# Problems any operation may answer.
_ALWAYS = (400, 405, 413, 415, 421, 429, 502, 503)


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    required: bool = True
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required,
            "schema": self.schema,
        }
        if self.description:
            out["description"] = self.description
        return out


Body = type[BaseModel] | str | None  # a model, "binary" (raw bytes), or nothing


@dataclass(frozen=True)
class Operation:
    """One method on one path: what it takes and every status it may answer.

    `ok` maps success statuses to a response model ("binary" for raw bytes); `problems`
    lists the error statuses beyond those every operation may answer.
    """

    operation_id: str
    method: str
    path: str
    summary: str
    ok: dict[int, Body]
    problems: tuple[int, ...] = ()
    body: Body = None
    params: tuple[Param, ...] = ()
    auth: tuple[str, ...] = ()
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth_optional: bool = False
    body_required: bool = True


FILE_ID = Param("file_id", "path", {"type": "string", "pattern": "^[a-z2-7]{26}$"})
CHUNK_INDEX = Param("index", "path", {"type": "string", "pattern": "^[0-9]{1,10}$"})
COUNT = Param(
    "count", "query", {"type": "integer", "minimum": 1}, False, "chunks to buy ahead (range)"
)
RUN_FIRST = Param(
    "first", "query", {"type": "integer", "minimum": 0}, True, "the run's first chunk"
)
RUN_LAST = Param("last", "query", {"type": "integer", "minimum": 0}, True, "the run's last chunk")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key", "header", {"type": "string", "minLength": 8, "maxLength": 128}
)
WITHDRAWAL_ID = Param("withdrawal_id", "path", {"type": "string", "maxLength": 64})
KEY_NAME = Param("name", "path", {"type": "string", "pattern": "^(password|link-[a-z2-7]{13})$"})
SINCE = Param("since", "query", {"type": "integer", "minimum": 0}, False, "last counter seen")
WAIT = Param("wait", "query", {"type": "integer", "minimum": 0}, False, "long-poll seconds")

_FILE_LINKS = {
    "PutChunk": {
        "operationId": "putChunk",
        "parameters": {"file_id": "$response.body#/file_id", "index": "0"},
    },
    "GetFile": {"operationId": "getFile", "parameters": {"file_id": "$response.body#/file_id"}},
    "GetChunk": {
        "operationId": "getChunk",
        "parameters": {"file_id": "$response.body#/file_id", "index": "0"},
    },
    "CompleteFile": {
        "operationId": "completeFile",
        "parameters": {"file_id": "$response.body#/file_id"},
    },
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "health",
        "get",
        "/v1/health",
        "Is the gateway and what it depends on answering?",
        {200: m.Health},
        (503,),
    ),
    Operation("openapi", "get", "/v1/openapi.json", "This document", {200: None}),
    Operation(
        "createAccount",
        "post",
        "/v1/accounts",
        "Create an account; its API key is shown once (a tenant may charge for it: L402)",
        {201: m.AccountCreated},
        (402, 403, 409, 422, 507),
        body=m.CreateAccountBody,
        body_required=False,
        auth=("l402",),
        auth_optional=True,
    ),
    Operation(
        "loginSalt",
        "post",
        "/v1/login/salt",
        "A username's login salt and argon2id cost (an unknown name gets one alike)",
        {200: m.LoginSalt},
        body=m.LoginSaltBody,
    ),
    Operation(
        "login",
        "post",
        "/v1/login",
        "Username + proof (a restored account's first login: + password) → a new API key",
        {200: m.LoggedIn},
        (401, 422),
        body=m.LoginBody,
    ),
    Operation(
        "getAccount",
        "get",
        "/v1/account",
        "Usage, quota, plans, earnings, per-file metering",
        {200: m.Usage},
        (401,),
        auth=("bearer",),
    ),
    Operation("listPlans", "get", "/v1/plans", "The tenant's plan catalogue", {200: m.PlanList}),
    Operation(
        "buyPlan",
        "post",
        "/v1/account/plans",
        "An invoice for a plan",
        {201: m.PlanInvoice},
        (401, 404, 422),
        m.BuyPlanBody,
        auth=("bearer",),
    ),
    Operation(
        "withdraw",
        "post",
        "/v1/account/withdrawals",
        "Pay earnings out to a BOLT 11 invoice",
        {200: m.Withdrawal, 202: m.Withdrawal},
        (401, 402, 409, 422),
        m.WithdrawBody,
        (IDEMPOTENCY_KEY,),
        ("bearer",),
        links={
            "GetWithdrawal": {
                "operationId": "getWithdrawal",
                "parameters": {"withdrawal_id": "$response.body#/withdrawal_id"},
            }
        },
    ),
    Operation(
        "getWithdrawal",
        "get",
        "/v1/account/withdrawals/{withdrawal_id}",
        "A withdrawal's state",
        {200: m.Withdrawal},
        (401, 404),
        params=(WITHDRAWAL_ID,),
        auth=("bearer",),
    ),
    Operation(
        "operatorReport",
        "get",
        "/v1/operator/report",
        "Every tenant's books (operator)",
        {200: m.OperatorReport},
        (401, 403),
        auth=("bearer",),
    ),
    Operation(
        "createFile",
        "post",
        "/v1/files",
        "Create a file (reserves its stored size)",
        {200: m.FileState, 201: m.FileState},
        (401, 409, 422, 507),
        m.CreateFileBody,
        auth=("bearer",),
        links=_FILE_LINKS,
    ),
    Operation(
        "createFileBatch",
        "post",
        "/v1/files/batch",
        "Store many free single-chunk files at once (owner; body: u32 index length, JSON"
        " index, sealed chunks; see docs/api.md)",
        {200: m.BatchStored},
        (400, 401, 409, 413, 422, 507),
        "binary",
        auth=("bearer",),
    ),
    Operation(
        "getFile",
        "get",
        "/v1/files/{file_id}",
        "A file's public state",
        {200: m.FileState},
        (404, 410),
        params=(FILE_ID,),
    ),
    Operation(
        "deleteFile",
        "delete",
        "/v1/files/{file_id}",
        "Delete a file (owner)",
        {200: m.FileDeleted},
        (401, 403, 404, 410),
        params=(FILE_ID,),
        auth=("bearer",),
    ),
    Operation(
        "putChunk",
        "put",
        "/v1/files/{file_id}/chunks/{index}",
        "Upload one sealed chunk",
        {200: m.ChunkStored, 201: m.ChunkStored},
        (401, 403, 404, 409, 410, 422),
        "binary",
        (FILE_ID, CHUNK_INDEX),
        ("bearer",),
    ),
    Operation(
        "completeFile",
        "post",
        "/v1/files/{file_id}/complete",
        "Mark the upload complete",
        {200: m.FileState},
        (401, 403, 404, 409, 410),
        params=(FILE_ID,),
        auth=("bearer",),
    ),
    Operation(
        "getChunk",
        "get",
        "/v1/files/{file_id}/chunks/{index}",
        "A sealed chunk: 402 with an L402 challenge until paid (a credit token pays the"
        " range ?count= asks for from credit; Bitcache-Token then carries its chunk token)",
        {200: "binary"},
        (402, 404, 409, 410),
        params=(FILE_ID, CHUNK_INDEX, COUNT),
        auth=("l402", "bearer"),
        auth_optional=True,
    ),
    Operation(
        "getChunkRun",
        "get",
        "/v1/files/{file_id}/chunks",
        "Sealed chunks first..last (at most 64) one after another, for a chunk token covering"
        " them all (or a free or owned file): 402 with an L402 challenge for the run otherwise",
        {200: "binary"},
        (400, 402, 404, 409, 410),
        params=(FILE_ID, RUN_FIRST, RUN_LAST),
        auth=("l402", "bearer"),
        auth_optional=True,
    ),
    Operation(
        "buyCredit",
        "post",
        "/v1/credit",
        "Buy prepaid credit: always 402, an L402 challenge whose paid token is a credit token",
        {},
        (402, 404, 422),
        m.CreditBody,
    ),
    Operation(
        "getCredit",
        "get",
        "/v1/credit",
        "What a credit token has left to spend",
        {200: m.CreditBalance},
        (401, 404),
        auth=("l402",),
    ),
    Operation(
        "preimage",
        "post",
        "/v1/l402/preimage",
        "The preimage of a token paid elsewhere",
        {200: m.PreimageSettled, 202: m.PreimagePending},
        (403, 404, 422),
        m.PreimageBody,
    ),
    Operation(
        "getVault",
        "get",
        "/v1/vault",
        "The vault's change counter and the names of its wrapped keys",
        {200: m.VaultInfo},
        (401,),
        auth=("bearer",),
    ),
    Operation(
        "getVaultKey",
        "get",
        "/v1/vault/keys/{name}",
        "A wrapped master key (only the client can unwrap it)",
        {200: m.VaultKey},
        (401, 404),
        params=(KEY_NAME,),
        auth=("bearer",),
    ),
    Operation(
        "putVaultKey",
        "put",
        "/v1/vault/keys/{name}",
        "Store a wrapped master key",
        {201: m.VaultKeyStored},
        (401, 409),
        m.PutKeyBody,
        (KEY_NAME,),
        ("bearer",),
        links={
            "GetVaultKey": {
                "operationId": "getVaultKey",
                "parameters": {"name": "$response.body#/name"},
            },
            "DeleteVaultKey": {
                "operationId": "deleteVaultKey",
                "parameters": {"name": "$response.body#/name"},
            },
        },
    ),
    Operation(
        "deleteVaultKey",
        "delete",
        "/v1/vault/keys/{name}",
        "Drop a wrapped key (e.g. a used device-link code)",
        {200: m.VaultKeyDeleted},
        (401, 404),
        params=(KEY_NAME,),
        auth=("bearer",),
    ),
    Operation(
        "getVaultChanges",
        "get",
        "/v1/vault/changes",
        "Objects changed after a counter; long-polls with ?wait",
        {200: m.VaultChanges},
        (401, 409),
        params=(SINCE, WAIT),
        auth=("bearer",),
    ),
    Operation(
        "writeVaultObjects",
        "post",
        "/v1/vault/objects",
        "Write a batch of ciphertext objects (and the deletion log, deleting chunk files)"
        " at the counter the writer names",
        {200: m.VaultCounter},
        (401, 403, 409, 507),
        m.WriteBody,
        auth=("bearer",),
    ),
)


def _content(model_or_kind: Body) -> dict[str, Any]:
    if model_or_kind == "binary":
        return {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    if model_or_kind is None:
        return {"application/json": {"schema": {"type": "object"}}}
    assert isinstance(model_or_kind, type)
    return {"application/json": {"schema": {"$ref": _REF.format(model=model_or_kind.__name__)}}}


def _problem(code: int) -> dict[str, Any]:
    return {
        "description": _STATUS_TEXT[code],
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, what in op.ok.items():
        responses[str(code)] = {"description": "OK", "content": _content(what)}
        if op.links:
            responses[str(code)]["links"] = op.links
    # Any request with a body may be too slow to arrive (gateway.http.bodies).
    slow_body = (408,) if op.body is not None else ()
    for code in sorted({*op.problems, *_ALWAYS, *slow_body} - set(op.ok)):
        responses[str(code)] = _problem(code)
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [p.to_json() for p in op.params],
        "responses": responses,
    }
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _content(op.body)}
    if op.auth:
        # An empty requirement first means "or no credentials at all".
        anonymous: list[dict[str, list[str]]] = [{}] if op.auth_optional else []
        out["security"] = anonymous + [{name: []} for name in op.auth]
    return out


def _models() -> list[type[BaseModel]]:
    found: set[type[BaseModel]] = {m.Problem}
    for op in OPERATIONS:
        for what in (op.body, *op.ok.values()):
            if isinstance(what, type) and issubclass(what, BaseModel):
                found.add(what)
    return sorted(found, key=lambda model: model.__name__)


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (deterministic: the committed copy is compared to it)."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in _models()], ref_template=_REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bitcache gateway",
            "version": API_VERSION,
            "description": "End-to-end-encrypted storage; every download paid per chunk over "
            "Lightning (L402). Amounts are integer millisatoshis. See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "API key"},
                "l402": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "L402 <macaroon>:<preimage hex>",
                },
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document as committed in docs/openapi.json: sorted keys, two-space indent."""
    return (json.dumps(document(), indent=2, sort_keys=True) + "\n").encode()


async def serve_document(request: web.Request) -> web.Response:
    """GET /v1/openapi.json (the same bytes as docs/openapi.json)."""
    return web.Response(body=document_bytes(), content_type="application/json")


if __name__ == "__main__":  # python -m gateway.http.openapi > docs/openapi.json
    import sys

    sys.stdout.buffer.write(document_bytes())
