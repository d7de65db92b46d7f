"""The OpenAPI document: committed copy up to date, every API route described, valid shape."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.app import create_app
from gateway.config import GatewayConfig, LndSettings
from gateway.http.openapi import OPERATIONS, document, document_bytes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(
        data_dir=tmp_path,
        kubo_api_url="http://127.0.0.1:1",
        lnd=LndSettings(
            rest_url="https://127.0.0.1:1", tls_cert=tmp_path / "c", macaroon=tmp_path / "m"
        ),
    )


def test_committed_document_matches_the_app() -> None:
    assert DOCS.read_bytes() == document_bytes(), (
        "docs/openapi.json is stale: regenerate it with "
        "`python -m gateway.http.openapi > docs/openapi.json`"
    )


def test_every_api_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(_config(tmp_path))
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }
    described = {(op.method, op.path) for op in OPERATIONS}
    assert routes == described


def test_document_shape() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    schemas = doc["components"]["schemas"]
    text = json.dumps(doc)
    # Every reference resolves.
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    # Every operation says what a problem looks like for its errors.
    for path in doc["paths"].values():
        for op in path.values():
            errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
            assert errors
            for code in errors:
                assert "application/problem+json" in op["responses"][code]["content"]
