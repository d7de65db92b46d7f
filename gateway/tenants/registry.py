"""Which brand a request is for, and each brand's Lightning node.

`resolve_host` is the pure rule. `TenantRegistry` holds the current list and re-reads the
tenants file when it changes (checked at most once a second), so `bitcache-admin tenant
…` takes effect without a restart; a broken file is reported and the last good list kept.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from gateway.config import (
    GatewayConfig,
    LndSettings,
    TenantSettings,
    check_tenants,
    validation_problems,
)
from gateway.http.problems import Handler, Problem
from lightning.lnd import LndRestClient

log = logging.getLogger("bitcache.tenants")

_TENANT_LIST = TypeAdapter(list[TenantSettings])


class TenantFileError(Exception):
    """The tenants file cannot be used; the message says where and why."""


def host_name(host_header: str) -> str:
    """'Files.Example.com:8443' → 'files.example.com'; IPv6 '[::1]:80' → '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def resolve_host(tenants: list[TenantSettings], host_header: str) -> TenantSettings | None:
    """The tenant that lists this host, else the one listing "*", else None."""
    name = host_name(host_header)
    fallback = None
    for tenant in tenants:
        if name in tenant.hostnames:
            return tenant
        if "*" in tenant.hostnames:
            fallback = tenant
    return fallback


def read_tenants_file(path: Path) -> list[TenantSettings]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TenantFileError(f"{path}: no such file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise TenantFileError(f"{path}: cannot read: {exc}") from exc
    try:
        tenants = _TENANT_LIST.validate_python(raw.get("tenants") if isinstance(raw, dict) else raw)
        check_tenants(tenants)
    except ValidationError as exc:
        raise TenantFileError(f"{path}: {validation_problems(exc)}") from exc
    except ValueError as exc:
        raise TenantFileError(f"{path}: {exc}") from exc
    return tenants


def write_tenants_file(path: Path, tenants: list[TenantSettings]) -> None:
    """Validates, then replaces the file atomically (the gateway never reads half of it)."""
    check_tenants(tenants)
    data = {
        "tenants": [
            t.model_dump(mode="json", exclude_defaults=True) | {"id": t.id} for t in tenants
        ]
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class TenantRegistry:
    def __init__(self, config: GatewayConfig) -> None:
        self._file = config.tenants_file
        self._tenants = list(config.tenants)
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        if self._file is not None:
            self._tenants = read_tenants_file(self._file)
            self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            st = self._file.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self) -> None:
        """Re-reads the tenants file if it changed since the last look."""
        if self._file is None or time.monotonic() - self._checked < 1.0:
            return
        self._checked = time.monotonic()
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._tenants = read_tenants_file(self._file)
            log.info("tenants reloaded: %s", ", ".join(t.id for t in self._tenants))
        except TenantFileError as exc:
            log.error("keeping the previous tenants: %s", exc)
        self._stamp = stamp

    @property
    def tenants(self) -> list[TenantSettings]:
        self.refresh()
        return list(self._tenants)

    def for_host(self, host_header: str) -> TenantSettings | None:
        return resolve_host(self.tenants, host_header)

    def get(self, tenant_id: str) -> TenantSettings | None:
        return next((t for t in self.tenants if t.id == tenant_id), None)


class LightningNodes:
    """One REST client per distinct LND node; tenants without a node use the gateway's."""

    def __init__(self, default: LndSettings) -> None:
        self.default = default
        self._clients: dict[str, LndRestClient] = {}

    def settings_for(self, tenant: TenantSettings | None) -> LndSettings:
        return tenant.lnd if tenant is not None and tenant.lnd is not None else self.default

    def client(self, settings: LndSettings) -> LndRestClient:
        key = settings.rest_url
        if key not in self._clients:
            self._clients[key] = LndRestClient(
                settings.rest_url, settings.tls_cert, settings.macaroon
            )
        return self._clients[key]

    def for_tenant(self, tenant: TenantSettings | None) -> LndRestClient:
        return self.client(self.settings_for(tenant))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


TENANT = web.RequestKey("tenant", TenantSettings)


def tenant_middleware(
    resolve: Callable[[str], TenantSettings | None], trust_forwarded_host: bool
) -> Any:
    """Picks the tenant from Host (or X-Forwarded-Host behind a trusted proxy)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/health":  # liveness checks come from anywhere
            return await handler(request)
        host = request.headers.get("Host", "")
        if trust_forwarded_host and request.headers.get("X-Forwarded-Host"):
            host = request.headers["X-Forwarded-Host"].split(",")[0]
        tenant = resolve(host) if host else None
        if tenant is None:
            shown = host[:100].encode("ascii", "replace").decode()
            raise Problem(
                421, "unknown-host", "Unknown host", f"no service is configured for host {shown!r}"
            )
        request[TENANT] = tenant
        return await handler(request)

    return middleware
