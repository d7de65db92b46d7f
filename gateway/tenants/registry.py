"""The tenants in force: the tenants file, read, written and watched.

`TenantRegistry` holds the current list and re-reads the tenants file when it changes
(checked at most once a second), so `bitcache-admin tenant …` takes effect without a
restart; a broken file is reported and the last good list kept. Which tenant a request is
for is the pure rule in resolve.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from gateway.config import GatewayConfig, TenantSettings, check_tenants, validation_problems
from gateway.tenants.resolve import resolve_host

log = logging.getLogger("bitcache.tenants")

_TENANT_LIST = TypeAdapter(list[TenantSettings])


class TenantFileError(Exception):
    """The tenants file cannot be used; the message says where and why."""


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
