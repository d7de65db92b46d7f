"""Schemathesis against a live gateway on the regtest network: every operation of
/v1/openapi.json, hundreds of generated cases each (valid and invalid), stateful links
(create file → put chunk → complete → get chunk), no server error and every response
conforming to the document."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from regtest.network import Network
from tests.conftest import gateway_config
from tests.gateways import serve_gateway
from tests.support import create_account, random_bytes, upload_raw

pytestmark = pytest.mark.integration

# At least 200 generated cases per operation (the floor); more with BITCACHE_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("BITCACHE_FUZZ_EXAMPLES", "200"))
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


async def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    network: Network, tmp_path: Path
) -> None:
    config = gateway_config(
        network,
        tmp_path / "gw",
        operator_token="op-" + "x" * 40,
        long_poll_max_s=1,  # generated ?wait= values would otherwise hold requests for a minute
    )
    async with serve_gateway(config) as url, aiohttp.ClientSession() as session:
        # Real data for the stateful phase and the owner's key for authenticated operations.
        _, api_key = await create_account(session, url)
        await upload_raw(session, url, random_bytes(5000), chunk_size=4096, api_key=api_key)
        report = tmp_path / "report.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{url}/v1/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--header",
            f"Authorization: Bearer {api_key}",
            "--seed",
            "402",
            "--generation-database",
            "none",
            # One worker: hypothesis describes its filters with ast.parse, which is not
            # thread-safe on CPython 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its own state directory (.schemathesis/) stays out of the tree
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    print(text[-6000:])  # pytest shows it when the assertion fails
    assert proc.returncode == 0, "schemathesis found failures (see output above)"
    summary = json.loads(report.read_text())
    print(json.dumps(summary, indent=1)[:3000])
