"""GET /f/{id}: where a share link lands. The key stays in the fragment, unseen here."""

from __future__ import annotations

import html

from aiohttp import web

from gateway.handlers.common import load_file
from gateway.handlers.files import get_file

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bitcache file</title>
<style>body{{font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:.2rem .4rem;word-break:break-all}}</style></head>
<body><h1>Encrypted file</h1>
<p>{chunks} chunk(s), {price} msat per chunk. The key is in this link's fragment and never
reached this server; only you can decrypt the file.</p>
<p>Download and pay with the Bitcache client:</p>
<p><code id="cmd">bitcache get &lt;this page's full address&gt;</code></p>
<script>document.getElementById("cmd").textContent = "bitcache get '" + location.href + "'";
</script></body></html>
"""


async def share_page(request: web.Request) -> web.StreamResponse:
    if "application/json" in request.headers.get("Accept", ""):
        return await get_file(request)
    record = await load_file(request)
    page = _PAGE.format(chunks=record.chunk_count, price=html.escape(str(record.price_msat)))
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            # The page must not leak the fragment-bearing URL to anything else.
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'",
        },
    )
