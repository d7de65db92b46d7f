"""The web app's pages: an HTML shell in the tenant's colours around a script that does
all encryption in the browser. Share links land on /f/{id} and folder links on /d/{id}; the
key stays in the fragment.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from pathlib import Path

from aiohttp import web

from gateway.config import TenantSettings
from gateway.http.handlers.files import get_file
from gateway.http.params import load_file
from gateway.services import tenant_of

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

# Scripts only from this origin; libsodium needs WebAssembly; QR codes are data: images;
# the tenant's logo may live elsewhere (its origin is added to img-src).
_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data: blob:{logo}; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# What an origin in a CSP source list may contain: nothing that ends or splits it.
_ORIGIN_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def logo_origin(logo_url: str | None) -> str | None:
    """The http(s) origin of an absolute logo URL, or None (relative: 'self' covers it;
    anything else is not allowed to load)."""
    if not logo_url:
        return None
    try:
        parts = urllib.parse.urlsplit(logo_url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.username is not None:
        return None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if not _ORIGIN_HOST.fullmatch(host):
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def content_security_policy(tenant: TenantSettings) -> str:
    origin = logo_origin(tenant.brand.logo_url)
    return _CSP.format(logo=f" {origin}" if origin else "")


def _shell(tenant: TenantSettings, title: str, script: str, attrs: str = "") -> web.Response:
    brand = tenant.brand
    logo = (
        f'<img class="logo" src="{html.escape(brand.logo_url)}" alt="">' if brand.logo_url else ""
    )
    name = html.escape(tenant.display_name)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · {name}</title>
<link rel="stylesheet" href="/static/style.css">
<style>:root{{--primary:{brand.primary_color};--background:{brand.background_color}}}</style>
</head><body>
<header class="site"><a href="/">{logo}<span class="brand">{name}</span></a>
<nav><a href="/">Upload</a> <a href="/vault">Vault</a> <a href="/account">Account</a></nav></header>
<main id="app"{attrs}><noscript>This page encrypts in your browser and needs
JavaScript.</noscript></main>
<script type="module" src="/static/{script}"></script>
</body></html>"""
    if not (STATIC_DIR / script).is_file():
        raise web.HTTPServiceUnavailable(
            text="the web app is not built: run `make web`", headers={"Retry-After": "60"}
        )
    return web.Response(
        text=body,
        content_type="text/html",
        headers={
            "Content-Security-Policy": content_security_policy(tenant),
            # The share page's URL holds the key in its fragment: never leak it onward.
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def upload_page(request: web.Request) -> web.Response:
    return _shell(tenant_of(request), "Share a file", "upload.js")


async def account_page(request: web.Request) -> web.Response:
    return _shell(tenant_of(request), "Account", "account.js")


async def vault_page(request: web.Request) -> web.Response:
    return _shell(tenant_of(request), "Vault", "vault.js")


async def share_page(request: web.Request) -> web.StreamResponse:
    if "application/json" in request.headers.get("Accept", ""):
        return await get_file(request)
    record = await load_file(request)
    return _shell(tenant_of(request), "Download", "download.js", f' data-file-id="{record.id}"')
