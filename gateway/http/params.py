"""Parsing path and query values into checked Python values, or a 400."""

from __future__ import annotations

import json
import math
import re
import time
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.http.problems import Problem, bad_request, gone, not_found
from gateway.persistence.files import ChunkRecord, FileRecord
from gateway.services import client_key, services, tenant_of
from storage.crypto import decode_file_id
from storage.errors import FormatError

M = TypeVar("M", bound=BaseModel)


def validation_detail(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")


async def json_model(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`, or a 4xx saying what is wrong."""
    charset = request.charset
    if charset is not None and charset.strip().lower() not in _UTF8_NAMES:
        # JSON is UTF-8 (RFC 8259 §8.1); decoding by a client-named codec, or failing to
        # find it, is not something to attempt.
        raise Problem(
            415,
            "unsupported-charset",
            "Unsupported charset",
            f"JSON bodies must be UTF-8, not {charset[:40]!r}",
        )
    raw = await request.read()
    try:
        return model.model_validate(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise bad_request("body is nested too deeply") from exc
    except ValidationError as exc:
        raise bad_request(validation_detail(exc)) from exc


def file_id_param(request: web.Request) -> str:
    text = request.match_info["file_id"]
    try:
        decode_file_id(text)
    except FormatError as exc:
        raise bad_request(f"not a file id: {exc}", "bad-file-id") from exc
    return text


def int_param(text: str, what: str, minimum: int = 0) -> int:
    # ASCII digits only: str.isdigit() accepts '²' and other Unicode digits int() refuses.
    if not _WHOLE_NUMBER.fullmatch(text):
        raise bad_request(f"{what} must be a whole number, got {text[:20]!r}")
    value = int(text)
    if value < minimum:
        raise bad_request(f"{what} must be at least {minimum}")
    return value


async def load_file(request: web.Request) -> FileRecord:
    file_id = file_id_param(request)
    return _visible(request, file_id, await services(request).files.get(file_id))


async def load_file_and_chunk(
    request: web.Request, index: int
) -> tuple[FileRecord, ChunkRecord | None]:
    """load_file, with the record of its chunk ``index`` read in the same query."""
    file_id = file_id_param(request)
    found = await services(request).files.get_with_chunk(file_id, index)
    record = _visible(request, file_id, None if found is None else found[0])
    return record, None if found is None else found[1]


def _visible(request: web.Request, file_id: str, record: FileRecord | None) -> FileRecord:
    if record is None or record.tenant_id != tenant_of(request).id:
        # Another brand's file does not exist here, as far as this host can tell.
        raise not_found(f"no file {file_id}")
    if record.deleted:
        raise gone(f"file {file_id} was deleted by its owner")
    return record


def chunk_index_param(request: web.Request) -> int:
    """The chunk index in the path, checked for form only: call before loading the file, so
    malformed input is a 400 whatever the file's state (404, 410)."""
    return int_param(request.match_info["index"], "chunk index")


def check_chunk_index(record: FileRecord, index: int) -> int:
    if index >= record.chunk_count:
        raise not_found(f"file {record.id} has chunks 0..{record.chunk_count - 1}, not {index}")
    return index


def spend_invoice_allowance(request: web.Request) -> None:
    """429 if this client has asked for too many new invoices lately."""
    wait = services(request).invoice_limiter.take(client_key(request), time.monotonic())
    if wait > 0:
        raise Problem(
            429,
            "too-many-invoices",
            "Too many invoices",
            "this client asked for new invoices faster than the gateway allows; "
            "pay the ones you have or retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def spend_signup_allowance(request: web.Request) -> None:
    """429 if this client, or everyone on this tenant together, opened (or asked to pay
    for) accounts faster than the gateway allows."""
    s, now = services(request), time.monotonic()
    for limiter, key, who in (
        (s.signup_client_limiter, client_key(request), "this client"),
        (s.signup_tenant_limiter, tenant_of(request).id, "this service"),
    ):
        wait = limiter.take(key, now)
        if wait > 0:
            raise Problem(
                429,
                "too-many-signups",
                "Too many new accounts",
                f"{who} opened accounts faster than the gateway allows; retry later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
