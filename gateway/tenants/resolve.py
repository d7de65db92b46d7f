"""Which tenant a request is for, from its Host header (pure)."""

from __future__ import annotations

from gateway.config import TenantSettings

__all__ = ["host_name", "resolve_host"]


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
