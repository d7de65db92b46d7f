"""Parsing path and query values into checked Python values, or a 400."""

from __future__ import annotations

from aiohttp import web

from gateway.files import FileRecord
from gateway.problems import bad_request, not_found
from gateway.services import services
from storage.crypto import decode_file_id
from storage.errors import FormatError


def file_id_param(request: web.Request) -> str:
    text = request.match_info["file_id"]
    try:
        decode_file_id(text)
    except FormatError as exc:
        raise bad_request(f"not a file id: {exc}", "bad-file-id") from exc
    return text


def int_param(text: str, what: str, minimum: int = 0) -> int:
    if not text.isdigit() or len(text) > 12:
        raise bad_request(f"{what} must be a whole number, got {text[:20]!r}")
    value = int(text)
    if value < minimum:
        raise bad_request(f"{what} must be at least {minimum}")
    return value


async def load_file(request: web.Request) -> FileRecord:
    file_id = file_id_param(request)
    record = await services(request).files.get(file_id)
    if record is None:
        raise not_found(f"no file {file_id}")
    return record


def chunk_index_param(request: web.Request, record: FileRecord) -> int:
    index = int_param(request.match_info["index"], "chunk index")
    if index >= record.chunk_count:
        raise not_found(f"file {record.id} has chunks 0..{record.chunk_count - 1}, not {index}")
    return index
